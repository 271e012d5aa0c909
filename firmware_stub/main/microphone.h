// I2S MEMS microphone (INMP441, ICS-43434, ...) on the ESP-IDF standard-mode I2S driver, as 16 kHz
// mono int16 PCM - the input edgekd's frontend was trained on.
#ifndef EDGEKD_MICROPHONE_H_
#define EDGEKD_MICROPHONE_H_

#include <cstddef>
#include <cstdint>

#include "driver/i2s_std.h"
#include "esp_err.h"

class Microphone {
 public:
  // Samples converted per Read call at most (one 10 ms frontend step).
  static constexpr size_t kMaxChunk = 160;

  esp_err_t Start(uint32_t sample_rate);

  // Blocks until `count` (<= kMaxChunk) samples are read; writes them as int16 to `out`.
  esp_err_t Read(int16_t* out, size_t count);

 private:
  i2s_chan_handle_t rx_ = nullptr;
  int32_t raw_[kMaxChunk];
};

#endif  // EDGEKD_MICROPHONE_H_
