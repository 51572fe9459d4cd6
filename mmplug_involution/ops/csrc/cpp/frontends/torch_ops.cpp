// The torch front-end of the involution CPU kernels: dispatch and
// registration.
//
// Registers torch.ops.mmplug_involution_cpu.forward, .backward,
// .generated_forward and .generated_backward (CPU). Each checks the shapes,
// picks the layout (NHWC when the input is channels_last and not also
// contiguous, NCHW otherwise; always NHWC for the generated ones, which
// exist in NHWC only) and the compute type (double for double, float for every other dtype:
// float32 accumulation), converts the operands, and calls the pass of that
// layout; results are cast back to the input's dtype. `poison` (for tests)
// fills the results with NaN first, so that an element a pass misses cannot
// pass unnoticed.
#include <torch/library.h>
#include <torch/types.h>

#include <limits>
#include <tuple>

#include <ATen/Parallel.h>

#include "../involution_cpu.h"

namespace mmplug_involution_cpu {

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& body) {
  at::parallel_for(begin, end, grain, body);
}

}  // namespace mmplug_involution_cpu

namespace {

using at::Tensor;
using namespace mmplug_involution_cpu;

// The geometry of a call whose kernel (given or generated) has shape
// (N, kernel_channels, ho, wo).
Geometry geometry(const Tensor& input, int64_t kernel_channels, int64_t ho,
                  int64_t wo, int64_t k, int64_t s, int64_t p, int64_t d) {
  TORCH_CHECK(input.dim() == 4, "involution: input must be 4-D");
  Geometry g;
  const char* error =
      make_geometry(g, input.size(0), input.size(1), input.size(2),
                    input.size(3), kernel_channels, ho, wo, k, s, p, d);
  TORCH_CHECK(error == nullptr, error);
  return g;
}

Geometry geometry(const Tensor& input, const Tensor& kernel, int64_t k,
                  int64_t s, int64_t p, int64_t d) {
  TORCH_CHECK(kernel.dim() == 4 && kernel.size(0) == input.size(0),
              "involution: kernel shape does not match the input");
  return geometry(input, kernel.size(1), kernel.size(2), kernel.size(3), k, s,
                  p, d);
}

// How a call computes: NHWC when the input is channels_last and not (also)
// plain contiguous, NCHW otherwise; in double for double, else in float.
struct Layout {
  bool nhwc;
  at::MemoryFormat format;
  at::ScalarType type;
  // `t` in the compute type and layout (a no-op when it already is)
  Tensor operator()(const Tensor& t) const {
    return t.to(type).contiguous(format);
  }
};

Layout layout_of(const Tensor& input) {
  const bool nhwc = !input.is_contiguous() &&
                    input.is_contiguous(at::MemoryFormat::ChannelsLast);
  return {nhwc,
          nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous,
          input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat};
}

// NHWC whatever the input's layout (the generated passes exist in NHWC only;
// an NCHW operand is converted), in layout_of's compute type.
Layout nhwc_layout(const Tensor& input) {
  return {true, at::MemoryFormat::ChannelsLast, layout_of(input).type};
}

void poison_with_nan(Tensor& t) {
  t.fill_(std::numeric_limits<double>::quiet_NaN());
}

// `poison` (for tests) fills the results with NaN before the kernels write
// them, so that an element a kernel misses cannot pass unnoticed.
Tensor involution_forward(const Tensor& input, const Tensor& kernel,
                          int64_t kernel_size, int64_t stride,
                          int64_t padding, int64_t dilation, bool poison) {
  const Geometry g =
      geometry(input, kernel, kernel_size, stride, padding, dilation);
  const Layout layout = layout_of(input);
  const Tensor x = layout(input), k = layout(kernel);
  Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, x.options(), layout.format);
  if (poison) poison_with_nan(out);
  AT_DISPATCH_FLOATING_TYPES(layout.type, "involution_forward_cpu", [&] {
    const auto forward = layout.nhwc ? forward_nhwc<scalar_t>
                                     : forward_nchw<scalar_t>;
    forward(x.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
            out.data_ptr<scalar_t>(), g);
  });
  return out.to(input.scalar_type());
}

// A generated involution: its geometry, R (the reduced channels) and its
// generator in the compute type: w (G*K*K, R), wt its transpose, b the bias
// (zeros without one).
struct Generator {
  Geometry g;
  int64_t r_count;
  Tensor w, wt, b;
};

Generator generator_of(const Tensor& input, const Tensor& reduced,
                       const Tensor& weight,
                       const c10::optional<Tensor>& bias, int64_t kernel_size,
                       int64_t stride, int64_t padding, int64_t dilation,
                       at::ScalarType type) {
  TORCH_CHECK(reduced.dim() == 4 && reduced.size(0) == input.size(0),
              "involution: reduced must be (N, R, Ho, Wo)");
  const int64_t gkk = weight.size(0), r_count = reduced.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == r_count &&
                  weight.size(2) == 1 && weight.size(3) == 1,
              "involution: weight must be (G*K*K, R, 1, 1)");
  TORCH_CHECK(!bias.has_value() || (bias->dim() == 1 && bias->size(0) == gkk),
              "involution: bias must be (G*K*K,)");
  const Geometry g = geometry(input, gkk, reduced.size(2), reduced.size(3),
                              kernel_size, stride, padding, dilation);
  const Tensor w = weight.reshape({gkk, r_count}).to(type).contiguous();
  const Tensor b = bias.has_value() ? bias->to(type).contiguous()
                                    : at::zeros({gkk}, w.options());
  return {g, r_count, w, w.t().contiguous(), b};
}

// Forward (computed in NHWC) with the kernel generated on the fly
// from `reduced` (N, R, Ho, Wo) by the 1x1 conv `weight` (G*K*K, R, 1, 1)
// and `bias` (G*K*K): the kernel tensor is never written.
Tensor generated_forward(const Tensor& input, const Tensor& reduced,
                         const Tensor& weight,
                         const c10::optional<Tensor>& bias,
                         int64_t kernel_size, int64_t stride,
                         int64_t padding, int64_t dilation, bool poison) {
  const Layout layout = nhwc_layout(input);
  const Generator gen = generator_of(input, reduced, weight, bias, kernel_size,
                                     stride, padding, dilation, layout.type);
  const Geometry& g = gen.g;
  const Tensor x = layout(input), red = layout(reduced);
  Tensor out = at::empty({g.n, g.c, g.ho, g.wo}, x.options(), layout.format);
  if (poison) poison_with_nan(out);
  AT_DISPATCH_FLOATING_TYPES(layout.type, "involution_generated_cpu", [&] {
    generated_forward_nhwc<scalar_t>(
        x.data_ptr<scalar_t>(), red.data_ptr<scalar_t>(),
        gen.wt.data_ptr<scalar_t>(), gen.b.data_ptr<scalar_t>(),
        out.data_ptr<scalar_t>(), gen.r_count, g);
  });
  return out.to(input.scalar_type());
}

// Fused backward of generated_forward (computed in NHWC): grad_input,
// grad_reduced, grad_weight and grad_bias (size 0 without a bias); neither
// the kernel nor its gradient is written to memory.
std::tuple<Tensor, Tensor, Tensor, Tensor> generated_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& reduced,
    const Tensor& weight, const c10::optional<Tensor>& bias,
    int64_t kernel_size, int64_t stride, int64_t padding, int64_t dilation,
    bool poison) {
  const Layout layout = nhwc_layout(input);
  const Generator gen = generator_of(input, reduced, weight, bias, kernel_size,
                                     stride, padding, dilation, layout.type);
  const Geometry& g = gen.g;
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}),
              "involution: grad_output shape does not match the output");
  const Tensor x = layout(input), red = layout(reduced),
               gy = layout(grad_output);
  Tensor grad_in = at::empty_like(x, layout.format);
  Tensor grad_red = at::empty_like(red, layout.format);
  Tensor grad_w = at::empty_like(gen.w);
  Tensor grad_b = at::empty_like(gen.b);
  if (poison) {
    for (Tensor* t : {&grad_in, &grad_red, &grad_w, &grad_b}) {
      poison_with_nan(*t);
    }
  }
  AT_DISPATCH_FLOATING_TYPES(layout.type, "involution_generated_bwd_cpu", [&] {
    generated_backward_nhwc<scalar_t>(
        gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
        red.data_ptr<scalar_t>(), gen.w.data_ptr<scalar_t>(),
        gen.wt.data_ptr<scalar_t>(), gen.b.data_ptr<scalar_t>(),
        grad_in.data_ptr<scalar_t>(), grad_red.data_ptr<scalar_t>(),
        grad_w.data_ptr<scalar_t>(), grad_b.data_ptr<scalar_t>(), gen.r_count,
        g);
  });
  return {grad_in.to(input.scalar_type()), grad_red.to(reduced.scalar_type()),
          grad_w.reshape(weight.sizes()).to(weight.scalar_type()),
          bias.has_value() ? grad_b.to(bias->scalar_type())
                           : at::empty({0}, weight.options())};
}

std::tuple<Tensor, Tensor> involution_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& kernel,
    int64_t kernel_size, int64_t stride, int64_t padding, int64_t dilation,
    bool poison) {
  const Geometry g =
      geometry(input, kernel, kernel_size, stride, padding, dilation);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}),
              "involution: grad_output shape does not match the output");
  const Layout layout = layout_of(input);
  const Tensor x = layout(input), k = layout(kernel), gy = layout(grad_output);
  Tensor grad_in = at::empty_like(x, layout.format);
  Tensor grad_k = at::empty_like(k, layout.format);
  if (poison) {
    poison_with_nan(grad_in);
    poison_with_nan(grad_k);
  }
  AT_DISPATCH_FLOATING_TYPES(layout.type, "involution_backward_cpu", [&] {
    const scalar_t *gy_p = gy.data_ptr<scalar_t>(),
                   *x_p = x.data_ptr<scalar_t>(), *k_p = k.data_ptr<scalar_t>();
    scalar_t *gx_p = grad_in.data_ptr<scalar_t>(),
             *gk_p = grad_k.data_ptr<scalar_t>();
    if (layout.nhwc) {
      grad_kernel_nhwc<scalar_t>(gy_p, x_p, gk_p, g);
      grad_input_nhwc<scalar_t>(gy_p, k_p, gx_p, g);
    } else {
      backward_nchw<scalar_t>(gy_p, x_p, k_p, gx_p, gk_p, g);
    }
  });
  return {grad_in.to(input.scalar_type()), grad_k.to(kernel.scalar_type())};
}

}  // namespace

TORCH_LIBRARY(mmplug_involution_cpu, m) {
  m.def(
      "forward(Tensor input, Tensor kernel, int kernel_size, int stride, "
      "int padding, int dilation, bool poison=False) -> Tensor");
  m.def(
      "backward(Tensor grad_output, Tensor input, Tensor kernel, "
      "int kernel_size, int stride, int padding, int dilation, "
      "bool poison=False) -> (Tensor, Tensor)");
  m.def(
      "generated_forward(Tensor input, Tensor reduced, Tensor weight, "
      "Tensor? bias, int kernel_size, int stride, int padding, int dilation, "
      "bool poison=False) -> Tensor");
  m.def(
      "generated_backward(Tensor grad_output, Tensor input, Tensor reduced, "
      "Tensor weight, Tensor? bias, int kernel_size, int stride, "
      "int padding, int dilation, bool poison=False) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmplug_involution_cpu, CPU, m) {
  m.impl("forward", &involution_forward);
  m.impl("backward", &involution_backward);
  m.impl("generated_forward", &generated_forward);
  m.impl("generated_backward", &generated_backward);
}
