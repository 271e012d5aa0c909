#include "kws/pipeline.h"

#include <cassert>
#include <cmath>

namespace kws {

const char* ValidateSettings(const Settings& s) {
  if (s.frames == 0) return "frames must be >= 1";
  if (s.features == 0) return "features must be >= 1";
  if (s.stride == 0) return "stride must be >= 1";
  if (!(std::isfinite(s.feature_scale) && s.feature_scale > 0.0f)) return "feature_scale must be > 0";
  if (!(std::isfinite(s.input.scale) && s.input.scale > 0.0f)) return "input.scale must be > 0";
  if (s.input.zero_point < -128 || s.input.zero_point > 127) return "input.zero_point must be in [-128, 127]";
  if (s.classes == 0) return "classes must be >= 1";
  if (s.exp_table == nullptr) return "exp_table is missing";
  if (s.exp_table[0] == 0) return "exp_table[0] must be > 0";
  if (s.detectable == nullptr) return "detectable is missing";
  if (s.window == 0 || s.window > 255) return "window must be in [1, 255]";
  return nullptr;
}

Pipeline::Pipeline(const Settings& s, int8_t* ring, int8_t* frame, uint8_t* history, uint32_t* sums,
                   uint8_t* probs)
    : settings_(s),
      ring_(ring, s.frames, s.features, s.stride),
      smoother_(history, sums, s.classes, s.window, s.cutoff, s.detectable, s.refractory),
      frame_(frame),
      probs_(probs) {
  assert(ValidateSettings(s) == nullptr && frame != nullptr && probs != nullptr);
}

bool Pipeline::PushFrame(const uint16_t* raw) {
  QuantizeFrame(raw, settings_.features, settings_.feature_scale, settings_.input, frame_);
  return ring_.Push(frame_);
}

Decision Pipeline::OnLogits(const int8_t* logits) {
  ProbabilitiesU8(logits, settings_.classes, settings_.exp_table, probs_);
  return smoother_.Update(probs_);
}

void Pipeline::Reset() {
  ring_.Reset();
  smoother_.Reset();
}

}  // namespace kws
