// Time behind an interface so decision logic and tests never read the real clock.
#pragma once

#include <chrono>
#include <cstdint>

namespace gantry {

// Milliseconds; monotonic for deadlines, wall (Unix epoch) for records people read.
using Millis = int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic milliseconds, for deadlines and durations.
  virtual Millis now_ms() const = 0;
  // Wall-clock milliseconds since the Unix epoch, for records and logs.
  virtual Millis wall_ms() const = 0;
};

class SystemClock final : public Clock {
 public:
  Millis now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  Millis wall_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// Monotonic microseconds of the real clock, for diagnostic timings only (log lines, bench
// figures): no decision may read it — decisions take a Clock.
inline int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A clock that moves only when told; for tests.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(Millis start = 1'000'000) : now_(start) {}
  Millis now_ms() const override { return now_; }
  Millis wall_ms() const override { return 1'700'000'000'000 + now_; }
  void advance(Millis d) { now_ += d; }
  void set(Millis t) { now_ = t; }

 private:
  Millis now_;
};

}  // namespace gantry
