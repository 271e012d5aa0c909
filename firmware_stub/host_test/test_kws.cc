// Unit tests of components/kws on hand-computed cases (the bit-identity with edgekd's Python is
// kws_vectors' job; these pin the rules themselves and the edge cases).
#include <cmath>
#include <cstring>
#include <limits>

#include "check.h"
#include "kws/kws.h"
#include "kws/pipeline.h"

namespace {

constexpr float kFeatureScale = 0.0390625f;

// table[d] = 65536 >> d: probabilities become easy to compute by hand.
struct HalvingTable {
  uint32_t v[kws::kExpTableSize];
  HalvingTable() {
    for (size_t d = 0; d < kws::kExpTableSize; ++d) v[d] = d < 17 ? (65536u >> d) : 0u;
  }
};

}  // namespace

TEST(quantize_rounds_halves_away_from_zero) {
  const kws::InputQuantization unit{1.0f, 0};
  CHECK_EQ(kws::QuantizeFeature(2.5f, unit), 3);
  CHECK_EQ(kws::QuantizeFeature(-2.5f, unit), -3);
  CHECK_EQ(kws::QuantizeFeature(0.5f, unit), 1);
  CHECK_EQ(kws::QuantizeFeature(-0.5f, unit), -1);
  CHECK_EQ(kws::QuantizeFeature(1.4999f, unit), 1);
  CHECK_EQ(kws::QuantizeFeature(3.5f, unit), 4);  // round-half-even would give 4 too; 2.5 above tells
  CHECK_EQ(kws::QuantizeFeature(0.0f, unit), 0);
}

TEST(quantize_clamps_and_applies_zero_point) {
  const kws::InputQuantization q{0.5f, -128};
  CHECK_EQ(kws::QuantizeFeature(0.0f, q), -128);
  CHECK_EQ(kws::QuantizeFeature(127.5f, q), 127);   // 255 - 128
  CHECK_EQ(kws::QuantizeFeature(1e9f, q), 127);
  CHECK_EQ(kws::QuantizeFeature(-1e9f, q), -128);
  CHECK_EQ(kws::QuantizeFeature(std::numeric_limits<float>::infinity(), q), 127);
  CHECK_EQ(kws::QuantizeFeature(std::numeric_limits<float>::quiet_NaN(), q), -128);
  const kws::InputQuantization positive{0.25f, 5};
  CHECK_EQ(kws::QuantizeFeature(1.0f, positive), 9);
  CHECK_EQ(kws::QuantizeFeature(-40.0f, positive), -128);
}

TEST(quantize_raw_uses_the_frontend_scale) {
  // feature = raw * 0.0390625; scale 0.078125 makes every odd raw value an exact half.
  const kws::InputQuantization q{0.078125f, 0};
  CHECK_EQ(kws::QuantizeRawFeature(3, kFeatureScale, q), 2);  // 1.5 -> 2
  CHECK_EQ(kws::QuantizeRawFeature(5, kFeatureScale, q), 3);  // 2.5 -> 3 (half-even: 2)
  CHECK_EQ(kws::QuantizeRawFeature(65535, kFeatureScale, q), 127);
  const uint16_t raw[3] = {0, 1, 640};
  int8_t out[3];
  kws::QuantizeFrame(raw, 3, kFeatureScale, {0.1f, -128}, out);
  CHECK_EQ(out[0], -128);
  CHECK_EQ(out[1], -128);  // 0.390625 -> 0
  CHECK_EQ(out[2], 122);   // 25 / 0.1 = 250 -> 122
}

TEST(ring_schedules_first_full_then_every_stride) {
  int8_t storage[3 * 2];
  kws::FeatureRing ring(storage, 3, 2, 2);
  int8_t window[6];
  bool due[8] = {};
  for (int i = 1; i <= 7; ++i) {
    const int8_t frame[2] = {static_cast<int8_t>(10 * i), static_cast<int8_t>(10 * i + 1)};
    due[i] = ring.Push(frame);
    if (due[i]) {
      ring.CopyWindow(window);
      // oldest first: frames i-2, i-1, i
      for (int k = 0; k < 3; ++k) {
        CHECK_EQ(window[2 * k], 10 * (i - 2 + k));
        CHECK_EQ(window[2 * k + 1], 10 * (i - 2 + k) + 1);
      }
    }
  }
  CHECK(!due[1] && !due[2] && due[3] && !due[4] && due[5] && !due[6] && due[7]);
  CHECK(ring.full());
  ring.Reset();
  CHECK(!ring.full());
  const int8_t zero[2] = {0, 0};
  CHECK(!ring.Push(zero));
  CHECK(!ring.Push(zero));
  CHECK(ring.Push(zero));
}

TEST(ring_with_stride_one_runs_every_frame_once_full) {
  int8_t storage[4];
  kws::FeatureRing ring(storage, 4, 1, 1);
  int due = 0;
  for (int i = 0; i < 10; ++i) {
    const int8_t v = static_cast<int8_t>(i);
    due += ring.Push(&v) ? 1 : 0;
  }
  CHECK_EQ(due, 7);  // after frames 4..10
  int8_t window[4];
  ring.CopyWindow(window);
  CHECK(window[0] == 6 && window[1] == 7 && window[2] == 8 && window[3] == 9);
}

TEST(probabilities_from_the_exp_table) {
  const HalvingTable t;
  uint8_t p[4];
  const int8_t equal[2] = {5, 5};
  kws::ProbabilitiesU8(equal, 2, t.v, p);
  CHECK_EQ(p[0], 128);  // 127.5 rounds half up
  CHECK_EQ(p[1], 128);
  const int8_t steps[3] = {-128, 127, 126};  // d = 255, 0, 1: e = 0, 65536, 32768
  kws::ProbabilitiesU8(steps, 3, t.v, p);
  CHECK_EQ(p[0], 0);
  CHECK_EQ(p[1], 170);  // 255 * 2/3 = 170
  CHECK_EQ(p[2], 85);
  const int8_t single[1] = {-7};
  kws::ProbabilitiesU8(single, 1, t.v, p);
  CHECK_EQ(p[0], 255);
}

TEST(smoother_fires_strictly_above_cutoff_times_window_then_resets) {
  uint8_t history[2 * 3];
  uint32_t sums[3];
  const bool detectable[3] = {true, true, false};
  kws::PosteriorSmoother s(history, sums, 3, 2, 200, detectable);
  const uint8_t at_cutoff[3] = {200, 0, 0};
  CHECK(!s.Update(at_cutoff).detected);
  kws::Decision d = s.Update(at_cutoff);  // 400 == 200 * 2: not strictly above
  CHECK(!d.detected);
  CHECK_EQ(d.sum, 400);
  CHECK_EQ(d.average, 200);
  const uint8_t strong[3] = {250, 3, 2};
  d = s.Update(strong);  // 200 + 250 = 450 > 400
  CHECK(d.detected);
  CHECK_EQ(d.label, 0);
  CHECK_EQ(d.sum, 450);
  CHECK_EQ(s.sums()[1], 3);
  d = s.Update(strong);  // history was cleared: 250 only
  CHECK(!d.detected);
  CHECK_EQ(d.sum, 250);
}

TEST(smoother_refractory_period_suppresses_then_releases) {
  uint8_t history[1 * 2];
  uint32_t sums[2];
  const bool detectable[2] = {true, true};
  kws::PosteriorSmoother s(history, sums, 2, 1, 100, detectable, 2);
  const uint8_t strong[2] = {250, 5};
  CHECK(s.Update(strong).detected);
  kws::Decision d = s.Update(strong);  // suppressed 1 of 2: still reports the evidence
  CHECK(!d.detected);
  CHECK_EQ(d.sum, 250);
  CHECK(!s.Update(strong).detected);  // suppressed 2 of 2
  CHECK(s.Update(strong).detected);   // released
  s.Reset();                          // Reset also ends a refractory period
  CHECK(s.Update(strong).detected);
}

TEST(smoother_ignores_non_keywords_and_breaks_ties_low) {
  uint8_t history[1 * 3];
  uint32_t sums[3];
  const bool detectable[3] = {true, true, false};
  kws::PosteriorSmoother s(history, sums, 3, 1, 100, detectable);
  const uint8_t silence[3] = {0, 0, 255};
  kws::Decision d = s.Update(silence);
  CHECK(!d.detected);
  CHECK_EQ(d.label, 0);
  CHECK_EQ(d.sum, 0);
  const uint8_t tie[3] = {120, 120, 0};
  d = s.Update(tie);
  CHECK(d.detected);
  CHECK_EQ(d.label, 0);
  const bool none[3] = {false, false, false};
  kws::PosteriorSmoother nothing(history, sums, 3, 1, 0, none);
  d = nothing.Update(tie);
  CHECK(!d.detected);
  CHECK_EQ(d.label, -1);
}

TEST(pipeline_runs_quantize_ring_posterior_and_smoothing) {
  const HalvingTable t;
  const bool detectable[2] = {true, false};
  const kws::Settings settings{2, 2, 1, kFeatureScale, {0.078125f, 0}, 2, t.v, detectable, 1, 127, 0};
  CHECK(kws::ValidateSettings(settings) == nullptr);
  kws::Buffers<2, 2, 2, 1> buffers;
  kws::Pipeline pipeline(settings, buffers);
  const uint16_t f1[2] = {3, 5}, f2[2] = {7, 9};
  CHECK(!pipeline.PushFrame(f1));
  CHECK(pipeline.PushFrame(f2));
  int8_t input[4];
  pipeline.CopyInput(input);
  CHECK(input[0] == 2 && input[1] == 3 && input[2] == 4 && input[3] == 5);
  const int8_t logits[2] = {10, 9};  // e = 65536, 32768 -> p = 170, 85
  kws::Decision d = pipeline.OnLogits(logits);
  CHECK(pipeline.probabilities()[0] == 170 && pipeline.probabilities()[1] == 85);
  CHECK(d.detected && d.label == 0 && d.sum == 170);
  pipeline.Reset();
  CHECK(!pipeline.PushFrame(f1));
}

TEST(settings_validation_names_the_field) {
  const HalvingTable t;
  const bool detectable[1] = {true};
  kws::Settings s{98, 40, 10, kFeatureScale, {0.1f, -128}, 1, t.v, detectable, 3, 204, 10};
  CHECK(kws::ValidateSettings(s) == nullptr);
  s.window = 0;
  CHECK(std::strstr(kws::ValidateSettings(s), "window") != nullptr);
  s.window = 3;
  s.input.scale = 0.0f;
  CHECK(std::strstr(kws::ValidateSettings(s), "input.scale") != nullptr);
  s.input.scale = 0.1f;
  s.stride = 0;
  CHECK(std::strstr(kws::ValidateSettings(s), "stride") != nullptr);
}

int main() { return check::RunAll(); }
