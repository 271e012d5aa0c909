// edgekd keyword spotter for the ESP32-S3.
//
//   I2S microphone (16 kHz int16)
//     -> TFLite Micro audio frontend, configured from model_settings.h (what edgekd trained on)
//     -> kws::Pipeline: int8 quantization, ring of kFeatureFrames frames, an inference every
//        kInferenceStrideFrames frames
//     -> INT8 model in TFLite Micro, tensor arena statically allocated in internal RAM
//     -> kws::Pipeline: uint8 posterior, moving sum over kSmoothingWindow inferences, cutoff, refractory
//     -> edgekd_on_detection() (weak: define your own to act on a keyword)
//
// Everything model-specific comes from the edgekd build directory (EDGEKD_BUILD_DIR): model_data.cc and
// model_settings.h. The decision logic is components/kws, bit-identical to edgekd.detect.
#include <cinttypes>
#include <cstdint>
#include <cstring>

#include "esp_log.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "kws/pipeline.h"
#include "microphone.h"
#include "model_data.h"
#include "model_settings.h"
#include "sdkconfig.h"
#include "tensorflow/lite/experimental/microfrontend/lib/frontend.h"
#include "tensorflow/lite/experimental/microfrontend/lib/frontend_util.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace e = edgekd;

// Called on every detection; defined (weak) at the end of this file.
extern "C" void edgekd_on_detection(int label, const char* name, uint32_t average);

// What this firmware can run; a build that violates it fails to compile instead of misbehaving.
static_assert(e::kFrontendIsMicro, "firmware_stub computes TFLite Micro frontend features only");
static_assert(e::kOutputIsInt8Logits, "the posterior expects the model's int8 logits");
static_assert(e::kSampleRate == 16000, "the microphone path is 16 kHz");
static_assert(e::kFeatureCount == e::kFilterbankChannels, "one model input value per frontend channel");
static_assert(e::kTensorArenaSize % 16 == 0, "arena size must keep 16-byte alignment");
static_assert(e::kStepSamples <= static_cast<int>(Microphone::kMaxChunk), "one frontend step per read");

namespace {

constexpr char kTag[] = "edgekd";

// Tensor arena: a zero-initialised global lands in .bss of internal DRAM (this target has no PSRAM;
// never mark it EXT_RAM_BSS_ATTR: TFLite Micro touches every byte per inference). Its size is the
// arena TFLite Micro measured for this model plus the target's headroom, from the build.
alignas(16) uint8_t g_arena[e::kTensorArenaSize];

// Ring, posterior history and scratch for the pipeline, also static (internal RAM).
kws::Buffers<e::kFeatureFrames, e::kFeatureCount, e::kNumClasses, e::kSmoothingWindow> g_buffers;

const kws::Settings kSettings{
    e::kFeatureFrames,
    e::kFeatureCount,
    e::kInferenceStrideFrames,
    e::kFeatureScale,
    {e::kInputScale, e::kInputZeroPoint},
    e::kNumClasses,
    e::kExpTable,
    e::kDetectable,
    e::kSmoothingWindow,
    e::kProbabilityCutoff,
    e::kRefractoryInferences,
};

FrontendState g_frontend;
Microphone g_mic;
int16_t g_samples[e::kStepSamples];

bool InitFrontend() {
  FrontendConfig config;
  FrontendFillConfigWithDefaults(&config);
  config.window.size_ms = e::kWindowMs;
  config.window.step_size_ms = e::kStepMs;
  config.filterbank.num_channels = e::kFilterbankChannels;
  config.filterbank.lower_band_limit = e::kFilterbankLowerBandLimitHz;
  config.filterbank.upper_band_limit = e::kFilterbankUpperBandLimitHz;
  config.noise_reduction.smoothing_bits = e::kNoiseReductionSmoothingBits;
  config.noise_reduction.even_smoothing = e::kNoiseReductionEvenSmoothing;
  config.noise_reduction.odd_smoothing = e::kNoiseReductionOddSmoothing;
  config.noise_reduction.min_signal_remaining = e::kNoiseReductionMinSignalRemaining;
  config.pcan_gain_control.enable_pcan = e::kPcanEnable ? 1 : 0;
  config.pcan_gain_control.strength = e::kPcanStrength;
  config.pcan_gain_control.offset = e::kPcanOffset;
  config.pcan_gain_control.gain_bits = e::kPcanGainBits;
  config.log_scale.enable_log = e::kLogScaleEnable ? 1 : 0;
  config.log_scale.scale_shift = e::kLogScaleShift;
  // Allocates a few KB (FFT, filterbank, noise estimates) from the internal heap, once.
  return FrontendPopulateState(&config, &g_frontend, e::kSampleRate) != 0;
}

// Checks that the model in flash is the one model_settings.h describes (same build directory).
bool CheckModelTensors(tflite::MicroInterpreter& interpreter) {
  const TfLiteTensor* in = interpreter.input(0);
  const TfLiteTensor* out = interpreter.output(0);
  if (in->type != kTfLiteInt8 || in->bytes != static_cast<size_t>(e::kInputElements) ||
      in->params.scale != e::kInputScale || in->params.zero_point != e::kInputZeroPoint) {
    ESP_LOGE(kTag, "model input (%u bytes, scale %g, zero point %d) differs from model_settings.h",
             static_cast<unsigned>(in->bytes), static_cast<double>(in->params.scale),
             static_cast<int>(in->params.zero_point));
    return false;
  }
  if (out->type != kTfLiteInt8 || out->bytes != static_cast<size_t>(e::kNumClasses)) {
    ESP_LOGE(kTag, "model output (%u bytes) differs from model_settings.h (%d int8 classes)",
             static_cast<unsigned>(out->bytes), e::kNumClasses);
    return false;
  }
  return true;
}

void KeywordTask(void*) {
  tflite::InitializeTarget();
  if (g_model_len != e::kModelBytes) {
    ESP_LOGE(kTag, "model_data.cc (%u B) and model_settings.h (%u B) come from different builds",
             static_cast<unsigned>(g_model_len), static_cast<unsigned>(e::kModelBytes));
    vTaskDelete(nullptr);
  }
  const tflite::Model* model = tflite::GetModel(g_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    ESP_LOGE(kTag, "model schema %" PRIu32 ", TFLite Micro expects %d", model->version(),
             TFLITE_SCHEMA_VERSION);
    vTaskDelete(nullptr);
  }

  // Exactly the ops the build's model uses (parity.json "ops"), nothing more linked in.
  static tflite::MicroMutableOpResolver<e::kNumOps> resolver;
#define EDGEKD_ADD_OP(op)                          \
  if (resolver.Add##op() != kTfLiteOk) {           \
    ESP_LOGE(kTag, "cannot register op %s", #op);  \
    vTaskDelete(nullptr);                          \
  }
  EDGEKD_MODEL_OPS(EDGEKD_ADD_OP)
#undef EDGEKD_ADD_OP

  static tflite::MicroInterpreter interpreter(model, resolver, g_arena, sizeof(g_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    ESP_LOGE(kTag,
             "AllocateTensors failed in a %u B arena (host measurement %u B): ESP-NN kernels may need more "
             "scratch; raise budget.arena_headroom and rebuild",
             static_cast<unsigned>(sizeof(g_arena)), static_cast<unsigned>(e::kArenaMeasuredBytes));
    vTaskDelete(nullptr);
  }
  if (!CheckModelTensors(interpreter)) vTaskDelete(nullptr);
  ESP_LOGI(kTag, "model %.12s (%s): %d classes, arena %u / %u B used", e::kModelSha256, e::kTarget,
           e::kNumClasses, static_cast<unsigned>(interpreter.arena_used_bytes()),
           static_cast<unsigned>(sizeof(g_arena)));

  if (const char* error = kws::ValidateSettings(kSettings)) {
    ESP_LOGE(kTag, "model_settings.h: %s", error);
    vTaskDelete(nullptr);
  }
  kws::Pipeline pipeline(kSettings, g_buffers);
  if (!InitFrontend()) {
    ESP_LOGE(kTag, "FrontendPopulateState failed (out of memory?)");
    vTaskDelete(nullptr);
  }
  if (g_mic.Start(e::kSampleRate) != ESP_OK) {
    ESP_LOGE(kTag, "I2S microphone start failed: check the GPIOs in menuconfig");
    vTaskDelete(nullptr);
  }
  ESP_LOGI(kTag, "listening: inference every %d ms, threshold %.2f over %d inferences",
           e::kInferenceStrideFrames * e::kStepMs, static_cast<double>(e::kDetectionThreshold),
           e::kSmoothingWindow);

  int8_t* input = interpreter.input(0)->data.int8;
  const int8_t* output = interpreter.output(0)->data.int8;
  int64_t busy_us = 0;
  uint32_t inferences = 0;
  for (;;) {
    if (g_mic.Read(g_samples, e::kStepSamples) != ESP_OK) continue;
    const int16_t* samples = g_samples;
    size_t left = e::kStepSamples;
    while (left > 0) {
      size_t used = 0;
      const FrontendOutput frame = FrontendProcessSamples(&g_frontend, samples, left, &used);
      samples += used;
      left -= used;
      if (frame.size == static_cast<size_t>(e::kFeatureCount) && pipeline.PushFrame(frame.values)) {
        const int64_t t0 = esp_timer_get_time();
        pipeline.CopyInput(input);
        if (interpreter.Invoke() != kTfLiteOk) {
          ESP_LOGE(kTag, "Invoke failed");
          continue;
        }
        const kws::Decision d = pipeline.OnLogits(output);
        busy_us += esp_timer_get_time() - t0;
        if (d.detected) {
          edgekd_on_detection(d.label, e::kLabels[d.label], d.average);
        }
        if (++inferences % 100 == 0) {
          ESP_LOGI(kTag, "%" PRIu32 " inferences, %.1f ms each on average", inferences,
                   static_cast<double>(busy_us) / 100000.0);
          busy_us = 0;
        }
      }
      if (used == 0) break;  // the frontend consumed nothing: wait for more audio
    }
  }
}

}  // namespace

// Called on every detection with the class index, its label and the window-average probability
// (0..255). Weak: define `extern "C" void edgekd_on_detection(int, const char*, uint32_t)` elsewhere to
// act on keywords; it runs in the keyword task, so keep it short (post to a queue for long work).
extern "C" __attribute__((weak)) void edgekd_on_detection(int label, const char* name, uint32_t average) {
  ESP_LOGI(kTag, "detected \"%s\" (class %d, p = %.2f)", name, label, static_cast<double>(average) / 255.0);
}

extern "C" void app_main(void) {
  xTaskCreatePinnedToCore(KeywordTask, "kws", CONFIG_EDGEKD_TASK_STACK, nullptr, 5, nullptr,
                          CONFIG_EDGEKD_TASK_CORE);
}
