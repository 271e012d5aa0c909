#include "kws/quantize.h"

#include <cmath>

namespace kws {

int8_t QuantizeFeature(float value, const InputQuantization& q) {
  // float32 division then std::round (halves away from zero), exactly TFLite's reference kernel.
  const float scaled = value / q.scale;
  const float rounded = std::round(scaled);
  // Clamp in float before converting: a huge or non-finite value must not overflow int32.
  const float lo = -128.0f - static_cast<float>(q.zero_point);
  const float hi = 127.0f - static_cast<float>(q.zero_point);
  if (!(rounded > lo)) return -128;  // also catches NaN
  if (rounded >= hi) return 127;
  const int32_t v = static_cast<int32_t>(rounded) + q.zero_point;
  return static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v));
}

int8_t QuantizeRawFeature(uint16_t raw, float feature_scale, const InputQuantization& q) {
  return QuantizeFeature(static_cast<float>(raw) * feature_scale, q);
}

void QuantizeFrame(const uint16_t* raw, size_t count, float feature_scale, const InputQuantization& q,
                   int8_t* out) {
  for (size_t i = 0; i < count; ++i) out[i] = QuantizeRawFeature(raw[i], feature_scale, q);
}

}  // namespace kws
