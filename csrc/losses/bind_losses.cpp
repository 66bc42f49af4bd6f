// pybind11 glue of the losses family (registered into medseg_ext._C by bindings.cpp).
#include "common/bind_util.h"
#include "losses/region_stats.h"

namespace py = pybind11;
using medseg::TensorDesc;
using medseg::to_desc;

namespace {

medseg::losses::RegionStatsParams region_params(bool sigmoid, bool per_sample, bool has_ignore,
                                                int64_t ignore_index) {
  medseg::losses::RegionStatsParams p;
  p.sigmoid = sigmoid;
  p.per_sample = per_sample;
  p.has_ignore = has_ignore;
  p.ignore_index = ignore_index;
  return p;
}

medseg::losses::ExtraParams extra_params(int kind, double gamma, double a_pos, double a_neg,
                                         double logit_threshold, int outputs) {
  medseg::losses::ExtraParams e;
  e.kind = static_cast<medseg::losses::PointwiseKind>(kind);
  e.gamma = gamma;
  e.a_pos = a_pos;
  e.a_neg = a_neg;
  e.logit_threshold = logit_threshold;
  e.want_q = (outputs & 1) != 0;  // bits as medseg_ext.losses.fused.OUT_Q / OUT_HARD
  e.want_hard = (outputs & 2) != 0;
  return e;
}

void bind_losses(py::module_& m) {
  m.def(
      "fused_stats_cpu",
      [](py::tuple logits, py::tuple labels, uintptr_t out_ptr, uintptr_t ext_ptr, bool sigmoid, bool per_sample,
         bool has_ignore, int64_t ignore_index, int kind, double gamma, double a_pos, double a_neg,
         double logit_threshold, int outputs, uintptr_t probs_ptr) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        const auto ex = extra_params(kind, gamma, a_pos, a_neg, logit_threshold, outputs);
        py::gil_scoped_release release;
        medseg::losses::fused_stats_cpu(lg, lab, reinterpret_cast<double*>(out_ptr), reinterpret_cast<double*>(ext_ptr),
                                        prm, ex, reinterpret_cast<float*>(probs_ptr));
      },
      py::arg("logits"), py::arg("labels"), py::arg("out_ptr"), py::arg("ext_ptr"), py::arg("sigmoid"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("kind"), py::arg("gamma"),
      py::arg("a_pos"), py::arg("a_neg"), py::arg("logit_threshold"), py::arg("outputs") = 3, py::arg("probs_ptr") = 0,
      "Region statistics (U, C, 4) and the extra statistics (U, C, 5) = Q, Spos, Sneg, Ph, TPh in one pass "
      "(outputs: bit 1 Q, bit 2 Ph/TPh; the others come back 0). probs_ptr (0: none): a contiguous float32 "
      "buffer of the logits' shape that receives the softmax probabilities (float32 softmax, kind none/log).");
  m.def(
      "softmax_probs_backward_cpu",
      [](py::tuple probs, py::tuple labels, uintptr_t coeff_ptr, uintptr_t ext_coeff_ptr, py::tuple grad_logits,
         bool per_sample, bool has_ignore, int64_t ignore_index, int kind, int outputs) {
        TensorDesc pr, lab;
        medseg::losses::normalise_region_inputs(to_desc(probs, "probs"), to_desc(labels, "labels"), pr, lab);
        TensorDesc gl = to_desc(grad_logits, "grad_logits").padded_to(5, 2);
        MEDSEG_CHECK(pr.is_contiguous() && gl.is_contiguous(), "probs, grad_logits: must be contiguous");
        for (int i = 0; i < 5; ++i)
          MEDSEG_CHECK(gl.shape[i] == pr.shape[i], "grad_logits: shape must equal the probs shape");
        const auto prm = region_params(false, per_sample, has_ignore, ignore_index);
        const auto ex = extra_params(kind, 2.0, 1.0, 1.0, 0.0, outputs);
        py::gil_scoped_release release;
        medseg::losses::softmax_probs_backward_cpu(pr, lab, reinterpret_cast<const double*>(coeff_ptr),
                                                   reinterpret_cast<const double*>(ext_coeff_ptr), gl, prm, ex);
      },
      py::arg("probs"), py::arg("labels"), py::arg("coeff_ptr"), py::arg("ext_coeff_ptr"), py::arg("grad_logits"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("kind"), py::arg("outputs"),
      "dL/dlogits of softmax statistics from the probabilities fused_stats_cpu stored (ext_coeff_ptr 0: none).");
  m.def(
      "fused_stats_backward_cpu",
      [](py::tuple logits, py::tuple labels, uintptr_t coeff_ptr, uintptr_t ext_coeff_ptr, py::tuple grad_logits,
         bool sigmoid, bool per_sample, bool has_ignore, int64_t ignore_index, int kind, double gamma, double a_pos,
         double a_neg, double logit_threshold, int outputs) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        TensorDesc gl = to_desc(grad_logits, "grad_logits").padded_to(5, 2);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        const auto ex = extra_params(kind, gamma, a_pos, a_neg, logit_threshold, outputs);
        py::gil_scoped_release release;
        medseg::losses::fused_stats_backward_cpu(lg, lab, reinterpret_cast<const double*>(coeff_ptr),
                                                 reinterpret_cast<const double*>(ext_coeff_ptr), gl, prm, ex);
      },
      py::arg("logits"), py::arg("labels"), py::arg("coeff_ptr"), py::arg("ext_coeff_ptr"), py::arg("grad_logits"),
      py::arg("sigmoid"), py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("kind"),
      py::arg("gamma"), py::arg("a_pos"), py::arg("a_neg"), py::arg("logit_threshold"), py::arg("outputs") = 3,
      "dL/dlogits from (U, C, 2) region coefficients and (U, C, 3) extra coefficients dL/dQ, dL/dSpos, dL/dSneg.");

  m.def(
      "region_stats_cpu",
      [](py::tuple logits, py::tuple labels, uintptr_t out_ptr, bool sigmoid, bool per_sample, bool has_ignore,
         int64_t ignore_index) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        py::gil_scoped_release release;
        medseg::losses::soft_region_stats_cpu(lg, lab, reinterpret_cast<double*>(out_ptr), prm);
      },
      py::arg("logits"), py::arg("labels"), py::arg("out_ptr"), py::arg("sigmoid"), py::arg("per_sample"),
      py::arg("has_ignore"), py::arg("ignore_index"),
      "Soft region statistics I, P, G, N into a contiguous float64 (U, C, 4) buffer.");

  m.def(
      "region_stats_backward_cpu",
      [](py::tuple logits, py::tuple labels, uintptr_t coeff_ptr, py::tuple grad_logits, bool sigmoid,
         bool per_sample, bool has_ignore, int64_t ignore_index) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        TensorDesc gl = to_desc(grad_logits, "grad_logits").padded_to(5, 2);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        py::gil_scoped_release release;
        medseg::losses::soft_region_stats_backward_cpu(lg, lab, reinterpret_cast<const double*>(coeff_ptr), gl,
                                                       prm);
      },
      py::arg("logits"), py::arg("labels"), py::arg("coeff_ptr"), py::arg("grad_logits"), py::arg("sigmoid"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"),
      "Writes dL/dlogits (contiguous, logits dtype) from float64 (U, C, 2) coefficients dL/dI, dL/dP.");

#ifdef MEDSEG_EXT_WITH_CUDA
  m.def("region_stats_cuda_blocks", &medseg::losses::region_stats_cuda_blocks, py::arg("spatial_size"),
        "Number of spatial blocks per sample the CUDA statistics kernel writes partials for.");
  m.def(
      "region_stats_cuda",
      [](py::tuple logits, py::tuple labels, uintptr_t partial_ptr, uintptr_t counts_ptr, bool sigmoid,
         bool per_sample, bool has_ignore, int64_t ignore_index, intptr_t stream) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        medseg::losses::soft_region_stats_cuda(lg, lab, reinterpret_cast<void*>(partial_ptr),
                                               reinterpret_cast<int32_t*>(counts_ptr), prm, stream);
      },
      py::arg("logits"), py::arg("labels"), py::arg("partial_ptr"), py::arg("counts_ptr"), py::arg("sigmoid"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("stream"));
  m.def(
      "region_stats_backward_cuda",
      [](py::tuple logits, py::tuple labels, uintptr_t coeff_ptr, py::tuple grad_logits, bool sigmoid,
         bool per_sample, bool has_ignore, int64_t ignore_index, intptr_t stream) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        TensorDesc gl = to_desc(grad_logits, "grad_logits").padded_to(5, 2);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        medseg::losses::soft_region_stats_backward_cuda(lg, lab, reinterpret_cast<const void*>(coeff_ptr), gl, prm,
                                                        stream);
      },
      py::arg("logits"), py::arg("labels"), py::arg("coeff_ptr"), py::arg("grad_logits"), py::arg("sigmoid"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("stream"));
#endif
}

}  // namespace

MEDSEG_REGISTER_FAMILY(losses, bind_losses)
