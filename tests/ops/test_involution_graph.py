"""torch.library registration: fake implementation, torch.compile, autocast."""
import torch

from mmplug_involution.ops import involution2d
from .reference import involution_reference, random_case


def test_registered_as_torch_op():
    assert hasattr(torch.ops.mmplug_involution, 'involution2d')
    assert hasattr(torch.ops.mmplug_involution, 'involution2d_backward')


def test_opcheck():
    gen = torch.Generator().manual_seed(0)
    x, k = random_case(2, 4, 7, 6, 3, 2, 1, 2, generator=gen)
    x.requires_grad_(True)
    k.requires_grad_(True)
    torch.library.opcheck(torch.ops.mmplug_involution.involution2d,
                          (x, k, 3, 2, 1, 1, 'auto'))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(2, 32, 57, 41)
        k = torch.empty(2, 98, 29, 21)
        out = involution2d(x, k, 7, 2)
        assert out.shape == (2, 32, 29, 21)


def test_torch_compile_has_no_graph_break():

    class Block(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.span = torch.nn.Conv2d(16, 49, 1)

        def forward(self, x):
            return torch.relu(involution2d(x, self.span(x), 7)) + x

    model = Block().double()
    x = torch.randn(2, 16, 13, 11, dtype=torch.float64, requires_grad=True)
    expected = model(x)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and model.span.weight.grad is not None
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0


def test_cpu_autocast_casts_both_operands():
    gen = torch.Generator().manual_seed(1)
    x, k = random_case(
        1, 8, 9, 9, 3, 1, 1, 2, dtype=torch.float32, generator=gen)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = involution2d(x, k.double().float(), 3)
    assert out.dtype == torch.bfloat16
    ref = involution_reference(x.bfloat16(), k.bfloat16(), 3)
    assert (out.double() - ref).abs().max() / ref.abs().max() < 1e-2
