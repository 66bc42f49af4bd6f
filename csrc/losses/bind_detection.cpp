// pybind11 glue of the detection losses and the label-aware mechanism (losses family, part
// "detection"; registered into medseg_ext._C by bindings.cpp). Optional arrays cross as None.
#include "common/bind_util.h"
#include "losses/detection.h"

namespace py = pybind11;
using medseg::TensorDesc;
using medseg::to_desc;

namespace {

TensorDesc optional_desc(const py::object& o, const char* arg) {
  if (o.is_none()) return TensorDesc{};
  return to_desc(o.cast<py::tuple>(), arg);
}

medseg::losses::DetectionOutputs outputs(uintptr_t loss_sum_ptr, const py::object& loss_elem, py::tuple grad) {
  medseg::losses::DetectionOutputs out;
  out.loss_sum = reinterpret_cast<double*>(loss_sum_ptr);
  out.loss_elem = optional_desc(loss_elem, "loss_elem");
  out.grad = to_desc(grad, "grad");
  return out;
}

void bind_detection(py::module_& m) {
  m.def(
      "sigmoid_focal_cpu",
      [](py::tuple logits, py::tuple labels, py::object weight, double alpha, double gamma, double scale,
         uintptr_t loss_sum_ptr, py::object loss_elem, py::tuple grad) {
        const TensorDesc lg = to_desc(logits, "logits"), lab = to_desc(labels, "labels");
        const TensorDesc w = optional_desc(weight, "weight");
        const auto out = outputs(loss_sum_ptr, loss_elem, grad);
        py::gil_scoped_release release;
        medseg::losses::sigmoid_focal_cpu(lg, lab, w, alpha, gamma, scale, out);
      },
      py::arg("logits"), py::arg("labels"), py::arg("weight"), py::arg("alpha"), py::arg("gamma"), py::arg("scale"),
      py::arg("loss_sum_ptr"), py::arg("loss_elem"), py::arg("grad"),
      "Sigmoid focal loss (mmdet semantics): scaled sum (float64 at loss_sum_ptr), optional per-element loss, "
      "and the gradient, in one pass.");
  m.def(
      "giou_cpu",
      [](py::tuple pred, py::tuple target, py::object weight, double eps, double scale, uintptr_t loss_sum_ptr,
         py::object loss_elem, py::tuple grad) {
        const TensorDesc a = to_desc(pred, "pred"), b = to_desc(target, "target");
        const TensorDesc w = optional_desc(weight, "weight");
        const auto out = outputs(loss_sum_ptr, loss_elem, grad);
        py::gil_scoped_release release;
        medseg::losses::giou_cpu(a, b, w, eps, scale, out);
      },
      py::arg("pred"), py::arg("target"), py::arg("weight"), py::arg("eps"), py::arg("scale"),
      py::arg("loss_sum_ptr"), py::arg("loss_elem"), py::arg("grad"),
      "GIoU loss 1 - GIoU (mmdet eps clamp rule) with its gradient w.r.t. pred, in one pass.");
  m.def(
      "centerness_target_cpu",
      [](py::tuple points, py::tuple gt_boxes, py::tuple out) {
        const TensorDesc p = to_desc(points, "points"), g = to_desc(gt_boxes, "gt_boxes"), o = to_desc(out, "out");
        py::gil_scoped_release release;
        medseg::losses::centerness_target_cpu(p, g, o);
      },
      py::arg("points"), py::arg("gt_boxes"), py::arg("out"), "ATSS centerness targets of points inside gt boxes.");
  m.def(
      "centerness_bce_cpu",
      [](py::tuple logits, py::tuple points, py::tuple gt_boxes, py::object weight, double scale, py::tuple target_out,
         uintptr_t loss_sum_ptr, py::object loss_elem, py::tuple grad) {
        const TensorDesc z = to_desc(logits, "logits"), p = to_desc(points, "points"),
                         g = to_desc(gt_boxes, "gt_boxes"), t = to_desc(target_out, "target_out");
        const TensorDesc w = optional_desc(weight, "weight");
        const auto out = outputs(loss_sum_ptr, loss_elem, grad);
        py::gil_scoped_release release;
        medseg::losses::centerness_bce_cpu(z, p, g, w, scale, t, out);
      },
      py::arg("logits"), py::arg("points"), py::arg("gt_boxes"), py::arg("weight"), py::arg("scale"),
      py::arg("target_out"), py::arg("loss_sum_ptr"), py::arg("loss_elem"), py::arg("grad"),
      "Centerness target + BCE-with-logits and its gradient, in one pass.");
  m.def(
      "distribution_focal_cpu",
      [](py::tuple logits, py::tuple target, py::object weight, double scale, uintptr_t loss_sum_ptr,
         py::object loss_elem, py::tuple grad) {
        const TensorDesc z = to_desc(logits, "logits"), y = to_desc(target, "target");
        const TensorDesc w = optional_desc(weight, "weight");
        const auto out = outputs(loss_sum_ptr, loss_elem, grad);
        py::gil_scoped_release release;
        medseg::losses::distribution_focal_cpu(z, y, w, scale, out);
      },
      py::arg("logits"), py::arg("target"), py::arg("weight"), py::arg("scale"), py::arg("loss_sum_ptr"),
      py::arg("loss_elem"), py::arg("grad"), "Distribution focal loss (GFL) and its gradient, in one pass.");
  m.def(
      "dual_energy_to_rgb_cpu",
      [](py::tuple high, py::tuple low, py::tuple out, int64_t channel_stride) {
        const TensorDesc h = to_desc(high, "high"), l = to_desc(low, "low"), o = to_desc(out, "out");
        py::gil_scoped_release release;
        medseg::losses::dual_energy_to_rgb_cpu(h, l, o, channel_stride);
      },
      py::arg("high"), py::arg("low"), py::arg("out"), py::arg("channel_stride"),
      "Dual-energy pair -> 3 channels (H/256, L/256, 510 sigmoid(H/L) - 255; L = 0 rule).");
  m.def(
      "confuse_labels_cpu",
      [](py::tuple scores, py::object labels, uintptr_t assigned_ptr, uintptr_t confuse_ptr, py::object y1,
         py::object y2) {
        const TensorDesc s = to_desc(scores, "scores"), lab = optional_desc(labels, "labels");
        const TensorDesc o1 = optional_desc(y1, "onehot_assigned"), o2 = optional_desc(y2, "onehot_confuse");
        py::gil_scoped_release release;
        medseg::losses::confuse_labels_cpu(s, lab, reinterpret_cast<int64_t*>(assigned_ptr),
                                           reinterpret_cast<int64_t*>(confuse_ptr), o1, o2);
      },
      py::arg("scores"), py::arg("labels"), py::arg("assigned_ptr"), py::arg("confuse_ptr"), py::arg("onehot_assigned"),
      py::arg("onehot_confuse"), "Assigned (or pseudo) labels, most-confusing labels and their one-hots, row-wise.");
  m.def(
      "la_modulate_cpu",
      [](py::tuple x, py::tuple g1, py::object g2, double a, double b, double c, py::tuple out, py::tuple factor) {
        const TensorDesc xd = to_desc(x, "x"), d1 = to_desc(g1, "g1"), d2 = optional_desc(g2, "g2");
        const TensorDesc o = to_desc(out, "out"), f = to_desc(factor, "factor");
        py::gil_scoped_release release;
        medseg::losses::la_modulate_cpu(xd, d1, d2, a, b, c, o, f);
      },
      py::arg("x"), py::arg("g1"), py::arg("g2"), py::arg("a"), py::arg("b"), py::arg("c"), py::arg("out"),
      py::arg("factor"), "x * (a + b sigmoid(g1) - c sigmoid(g2)) and the factor, in one pass.");
}

}  // namespace

MEDSEG_REGISTER_FAMILY(losses_detection, bind_detection)
