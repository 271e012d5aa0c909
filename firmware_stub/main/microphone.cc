#include "microphone.h"

#include "esp_check.h"
#include "freertos/FreeRTOS.h"
#include "sdkconfig.h"

namespace {
constexpr char kTag[] = "mic";
}

esp_err_t Microphone::Start(uint32_t sample_rate) {
  i2s_chan_config_t chan = I2S_CHANNEL_DEFAULT_CONFIG(I2S_NUM_AUTO, I2S_ROLE_MASTER);
  chan.dma_desc_num = 6;
  chan.dma_frame_num = 240;  // 15 ms per DMA buffer: ~90 ms of slack if inference runs long
  ESP_RETURN_ON_ERROR(i2s_new_channel(&chan, nullptr, &rx_), kTag, "i2s_new_channel");

  i2s_std_config_t std = {
      .clk_cfg = I2S_STD_CLK_DEFAULT_CONFIG(sample_rate),
      .slot_cfg = I2S_STD_PHILIPS_SLOT_DEFAULT_CONFIG(I2S_DATA_BIT_WIDTH_32BIT, I2S_SLOT_MODE_MONO),
      .gpio_cfg =
          {
              .mclk = I2S_GPIO_UNUSED,
              .bclk = static_cast<gpio_num_t>(CONFIG_EDGEKD_I2S_BCLK_GPIO),
              .ws = static_cast<gpio_num_t>(CONFIG_EDGEKD_I2S_WS_GPIO),
              .dout = I2S_GPIO_UNUSED,
              .din = static_cast<gpio_num_t>(CONFIG_EDGEKD_I2S_DIN_GPIO),
              .invert_flags = {.mclk_inv = false, .bclk_inv = false, .ws_inv = false},
          },
  };
#if CONFIG_EDGEKD_MIC_RIGHT_SLOT
  std.slot_cfg.slot_mask = I2S_STD_SLOT_RIGHT;
#else
  std.slot_cfg.slot_mask = I2S_STD_SLOT_LEFT;
#endif
  ESP_RETURN_ON_ERROR(i2s_channel_init_std_mode(rx_, &std), kTag, "i2s_channel_init_std_mode");
  return i2s_channel_enable(rx_);
}

esp_err_t Microphone::Read(int16_t* out, size_t count) {
  if (count > kMaxChunk) return ESP_ERR_INVALID_ARG;
  size_t done = 0;
  while (done < count * sizeof(int32_t)) {
    size_t got = 0;
    ESP_RETURN_ON_ERROR(i2s_channel_read(rx_, reinterpret_cast<uint8_t*>(raw_) + done,
                                         count * sizeof(int32_t) - done, &got, portMAX_DELAY),
                        kTag, "i2s_channel_read");
    done += got;
  }
  for (size_t i = 0; i < count; ++i) {
    // Arithmetic shift of the left-aligned sample, saturated to int16 (a gain > 1 must clip, not wrap).
    const int32_t v = raw_[i] >> CONFIG_EDGEKD_MIC_SHIFT;
    out[i] = static_cast<int16_t>(v > INT16_MAX ? INT16_MAX : (v < INT16_MIN ? INT16_MIN : v));
  }
  return ESP_OK;
}
