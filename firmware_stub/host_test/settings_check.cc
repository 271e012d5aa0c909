// Compiles a build's firmware package (model_settings.h + model_data.cc) on the host, wires its
// constants into the kws pipeline exactly as main/main.cc does, and prints them for comparison with
// manifest.json (tests/test_firmware.py). Exit 1 if the package is inconsistent.
#include <cinttypes>
#include <cstdint>
#include <cstdio>

#include "kws/pipeline.h"
#include "model_data.h"
#include "model_settings.h"

namespace e = edgekd;

// The same compile-time contract main/main.cc enforces on the device.
static_assert(e::kFrontendIsMicro, "firmware_stub computes TFLite Micro frontend features only");
static_assert(e::kOutputIsInt8Logits, "the posterior expects int8 logits");
static_assert(e::kFeatureCount == e::kFilterbankChannels, "one model input value per frontend channel");
static_assert(e::kTensorArenaSize % 16 == 0 && e::kTensorArenaSize >= e::kArenaMeasuredBytes, "arena");
static_assert(sizeof(e::kLabels) / sizeof(e::kLabels[0]) == e::kNumClasses, "labels");
static_assert(e::kSmoothingWindow >= 1 && e::kInferenceStrideFrames >= 1, "decision settings");

int main() {
  static kws::Buffers<e::kFeatureFrames, e::kFeatureCount, e::kNumClasses, e::kSmoothingWindow> buffers;
  const kws::Settings settings{e::kFeatureFrames,  e::kFeatureCount,  e::kInferenceStrideFrames,
                               e::kFeatureScale,   {e::kInputScale, e::kInputZeroPoint},
                               e::kNumClasses,     e::kExpTable,      e::kDetectable,
                               e::kSmoothingWindow, e::kProbabilityCutoff, e::kRefractoryInferences};
  if (const char* error = kws::ValidateSettings(settings)) {
    std::printf("error invalid settings: %s\n", error);
    return 1;
  }
  kws::Pipeline pipeline(settings, buffers);
  (void)pipeline;

  int ok = 1;
  if (g_model_len != e::kModelBytes) {
    std::printf("error g_model_len %zu != kModelBytes %zu (model_data.cc from another build?)\n", g_model_len,
                e::kModelBytes);
    ok = 0;
  }
  if (reinterpret_cast<uintptr_t>(g_model) % 16 != 0) {
    std::printf("error g_model is not 16-byte aligned\n");
    ok = 0;
  }
  std::printf("target %s\n", e::kTarget);
  std::printf("model_sha256 %s\n", e::kModelSha256);
  std::printf("model_bytes %zu\n", e::kModelBytes);
  std::printf("num_classes %d\n", e::kNumClasses);
  for (int i = 0; i < e::kNumClasses; ++i) {
    std::printf("label %s %d\n", e::kLabels[i], e::kDetectable[i] ? 1 : 0);
  }
  std::printf("sample_rate %d\n", e::kSampleRate);
  std::printf("window_ms %d\n", e::kWindowMs);
  std::printf("step_ms %d\n", e::kStepMs);
  std::printf("channels %d\n", e::kFilterbankChannels);
  std::printf("lower_band_limit_hz %.9g\n", static_cast<double>(e::kFilterbankLowerBandLimitHz));
  std::printf("upper_band_limit_hz %.9g\n", static_cast<double>(e::kFilterbankUpperBandLimitHz));
  std::printf("noise_smoothing_bits %d\n", e::kNoiseReductionSmoothingBits);
  std::printf("pcan_gain_bits %d\n", e::kPcanGainBits);
  std::printf("log_scale_shift %d\n", e::kLogScaleShift);
  std::printf("feature_scale %.9g\n", static_cast<double>(e::kFeatureScale));
  std::printf("feature_frames %d\n", e::kFeatureFrames);
  std::printf("feature_count %d\n", e::kFeatureCount);
  std::printf("input_scale %.9g\n", static_cast<double>(e::kInputScale));
  std::printf("input_zero_point %" PRId32 "\n", e::kInputZeroPoint);
  std::printf("output_scale %.9g\n", static_cast<double>(e::kOutputScale));
  std::printf("output_zero_point %" PRId32 "\n", e::kOutputZeroPoint);
  std::printf("exp_table");
  for (uint32_t v : e::kExpTable) std::printf(" %" PRIu32, v);
  std::printf("\n");
  std::printf("arena_measured %zu\n", e::kArenaMeasuredBytes);
  std::printf("arena %zu\n", e::kTensorArenaSize);
  std::printf("stride %d\n", e::kInferenceStrideFrames);
  std::printf("window %d\n", e::kSmoothingWindow);
  std::printf("threshold %.9g\n", static_cast<double>(e::kDetectionThreshold));
  std::printf("cutoff %d\n", e::kProbabilityCutoff);
  std::printf("refractory %d\n", static_cast<int>(e::kRefractoryInferences));
  std::printf("num_ops %d\n", e::kNumOps);
  std::printf("ops");
#define EDGEKD_PRINT_OP(op) std::printf(" %s", #op);
  EDGEKD_MODEL_OPS(EDGEKD_PRINT_OP)
#undef EDGEKD_PRINT_OP
  std::printf("\n");
  return ok ? 0 : 1;
}
