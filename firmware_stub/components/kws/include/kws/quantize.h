// Feature quantization: micro-frontend output -> the model's int8 input, as TFLite's QUANTIZE does.
//
// Reference: edgekd.detect.quantize_raw_features / edgekd.verify.runners.quantize_input. The rule is
//   q = clamp(round(x / scale) + zero_point, -128, 127)
// with the division in float32 and round() rounding halves away from zero (std::round). The float
// feature x = float(u) * 0.0390625f is exact for every uint16 u, so the result is bit-identical to
// edgekd's as long as float arithmetic is IEEE 754 single precision (no -ffast-math).
#ifndef KWS_QUANTIZE_H_
#define KWS_QUANTIZE_H_

#include <cstddef>
#include <cstdint>

namespace kws {

struct InputQuantization {
  float scale;         // the model input tensor's scale (> 0)
  int32_t zero_point;  // its zero point
};

// One float feature -> int8, TFLite's rule.
int8_t QuantizeFeature(float value, const InputQuantization& q);

// One uint16 frontend value -> int8: QuantizeFeature(float(raw) * feature_scale).
int8_t QuantizeRawFeature(uint16_t raw, float feature_scale, const InputQuantization& q);

// A frame of `count` uint16 frontend values -> `count` int8 model inputs.
void QuantizeFrame(const uint16_t* raw, size_t count, float feature_scale, const InputQuantization& q,
                   int8_t* out);

}  // namespace kws

#endif  // KWS_QUANTIZE_H_
