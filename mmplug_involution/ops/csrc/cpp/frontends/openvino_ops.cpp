// The OpenVINO front-end of the involution CPU kernels: an extension library
// with two operations, read from the ONNX nodes of the custom domain
// "mmplug_involution" that mmplug_involution.deploy writes with
// custom_ops=True:
//   Involution(input (N, C, H, W), kernel (N, G*K*K, Ho, Wo))
//       -> (N, C, Ho, Wo)                        the core's NCHW forward
//   GeneratedInvolution(input (N, C, H, W), reduced (N, R, Ho, Wo),
//                       weight (G*K*K, R, 1, 1)[, bias (G*K*K)])
//       -> (N, C, Ho, Wo)  the core's NCHW forward with the kernel
//                          conv2d(reduced, weight, bias) made on the fly a
//                          row at a time, never written whole
// attributes kernel_size, stride, padding, dilation (ints). They compute in
// f32 on OpenVINO's threads (TBB); other element types are refused at
// compile time with a message. Loaded with ov::Core::add_extension(path).
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <memory>
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/onnx/extension/op.hpp>
#include <openvino/op/op.hpp>
#include <string>
#include <vector>

#include "../involution_cpu.h"

namespace mmplug_involution_cpu {

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& body) {
  if (begin >= end) return;
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(begin, end, std::max<int64_t>(grain, 1)),
      [&](const tbb::blocked_range<int64_t>& range) {
        body(range.begin(), range.end());
      });
}

}  // namespace mmplug_involution_cpu

namespace mmplug_involution_openvino {

using namespace mmplug_involution_cpu;

constexpr const char* kDomain = "mmplug_involution";

// What both operations share: the window attributes, the checks and the
// output's shape (N, C) of the input, (Ho, Wo) of the second input.
class InvolutionBase : public ov::op::Op {
 public:
  InvolutionBase() = default;
  InvolutionBase(const ov::OutputVector& args, int64_t kernel_size,
                 int64_t stride, int64_t padding, int64_t dilation)
      : Op(args),
        kernel_size_(kernel_size),
        stride_(stride),
        padding_(padding),
        dilation_(dilation) {}

  void validate_and_infer_types() override {
    const auto& input = get_input_partial_shape(0);
    const auto& second = get_input_partial_shape(1);
    NODE_VALIDATION_CHECK(this, get_input_element_type(0) == ov::element::f32,
                          "mmplug_involution ", get_type_name(),
                          " computes in f32; got ",
                          get_input_element_type(0),
                          ": export the model in float32 (OpenVINO's "
                          "precision hint keeps these ops in float32).");
    NODE_VALIDATION_CHECK(this, input.rank().compatible(4) &&
                                    second.rank().compatible(4),
                          "mmplug_involution ", get_type_name(),
                          ": input and kernel must be 4-D");
    ov::PartialShape out = ov::PartialShape::dynamic(4);
    if (input.rank().is_static() && second.rank().is_static()) {
      out = ov::PartialShape{input[0], input[1], second[2], second[3]};
    }
    set_output_type(0, get_input_element_type(0), out);
  }

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("kernel_size", kernel_size_);
    visitor.on_attribute("stride", stride_);
    visitor.on_attribute("padding", padding_);
    visitor.on_attribute("dilation", dilation_);
    return true;
  }

  bool has_evaluate() const override {
    return get_input_element_type(0) == ov::element::f32;
  }

 protected:
  // The geometry of input (N, C, H, W) and a kernel of (N, kernel_channels,
  // Ho, Wo); throws ov::Exception with the core's message if they do not
  // fit.
  Geometry geometry(const ov::Shape& input, int64_t kernel_channels,
                    const ov::Shape& spatial) const {
    Geometry g;
    const char* error = make_geometry(
        g, input[0], input[1], input[2], input[3], kernel_channels,
        spatial[2], spatial[3], kernel_size_, stride_, padding_, dilation_);
    OPENVINO_ASSERT(error == nullptr, error);
    return g;
  }

  int64_t kernel_size_ = 1, stride_ = 1, padding_ = 0, dilation_ = 1;
};

class Involution : public InvolutionBase {
 public:
  OPENVINO_OP("Involution", "mmplug_involution");
  using InvolutionBase::InvolutionBase;

  std::shared_ptr<ov::Node> clone_with_new_inputs(
      const ov::OutputVector& args) const override {
    return std::make_shared<Involution>(args, kernel_size_, stride_,
                                        padding_, dilation_);
  }

  bool evaluate(ov::TensorVector& outputs,
                const ov::TensorVector& inputs) const override {
    const ov::Shape& kernel = inputs[1].get_shape();
    OPENVINO_ASSERT(kernel.size() == 4 && kernel[0] == inputs[0].get_shape()[0],
                    "involution: kernel shape does not match the input");
    const Geometry g = geometry(inputs[0].get_shape(), kernel[1], kernel);
    outputs[0].set_shape({static_cast<size_t>(g.n), static_cast<size_t>(g.c),
                          static_cast<size_t>(g.ho),
                          static_cast<size_t>(g.wo)});
    forward_nchw<float>(inputs[0].data<const float>(),
                        inputs[1].data<const float>(),
                        outputs[0].data<float>(), g);
    return true;
  }
};

class GeneratedInvolution : public InvolutionBase {
 public:
  OPENVINO_OP("GeneratedInvolution", "mmplug_involution");
  using InvolutionBase::InvolutionBase;

  void validate_and_infer_types() override {
    NODE_VALIDATION_CHECK(this,
                          get_input_size() == 3 || get_input_size() == 4,
                          "GeneratedInvolution takes input, reduced, weight "
                          "and an optional bias");
    InvolutionBase::validate_and_infer_types();
  }

  std::shared_ptr<ov::Node> clone_with_new_inputs(
      const ov::OutputVector& args) const override {
    return std::make_shared<GeneratedInvolution>(args, kernel_size_, stride_,
                                                 padding_, dilation_);
  }

  bool evaluate(ov::TensorVector& outputs,
                const ov::TensorVector& inputs) const override {
    const ov::Shape &x_shape = inputs[0].get_shape(),
                    &red_shape = inputs[1].get_shape(),
                    &w_shape = inputs[2].get_shape();
    OPENVINO_ASSERT(red_shape.size() == 4 && red_shape[0] == x_shape[0] &&
                        w_shape.size() == 4 && w_shape[1] == red_shape[1] &&
                        w_shape[2] == 1 && w_shape[3] == 1,
                    "involution: reduced must be (N, R, Ho, Wo) and weight "
                    "(G*K*K, R, 1, 1)");
    const int64_t gkk = w_shape[0], r_count = red_shape[1];
    OPENVINO_ASSERT(inputs.size() < 4 || inputs[3].get_size() == size_t(gkk),
                    "involution: bias must be (G*K*K,)");
    const Geometry g = geometry(x_shape, gkk, red_shape);
    outputs[0].set_shape({static_cast<size_t>(g.n), static_cast<size_t>(g.c),
                          static_cast<size_t>(g.ho),
                          static_cast<size_t>(g.wo)});
    static thread_local std::vector<float> zeros;
    const float* bias = nullptr;
    if (inputs.size() == 4) {
      bias = inputs[3].data<const float>();
    } else {
      zeros.assign(gkk, 0.f);
      bias = zeros.data();
    }
    generated_forward_nchw<float>(
        inputs[0].data<const float>(), inputs[1].data<const float>(),
        inputs[2].data<const float>(), bias, outputs[0].data<float>(), r_count,
        g);
    return true;
  }
};

}  // namespace mmplug_involution_openvino

using mmplug_involution_openvino::GeneratedInvolution;
using mmplug_involution_openvino::Involution;
using mmplug_involution_openvino::kDomain;

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<Involution>>(),
    std::make_shared<ov::frontend::onnx::OpExtension<Involution>>(
        "Involution", kDomain),
    std::make_shared<ov::OpExtension<GeneratedInvolution>>(),
    std::make_shared<ov::frontend::onnx::OpExtension<GeneratedInvolution>>(
        "GeneratedInvolution", kDomain),
}));
