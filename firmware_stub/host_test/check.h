// A tiny test harness (no downloads): CHECK records a failure and continues, TEST registers a case.
#ifndef KWS_HOST_TEST_CHECK_H_
#define KWS_HOST_TEST_CHECK_H_

#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace check {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& Registry() {
  static std::vector<Case> cases;
  return cases;
}

inline int& Failures() {
  static int failures = 0;
  return failures;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { Registry().push_back({name, std::move(fn)}); }
};

inline int RunAll() {
  int failed_cases = 0;
  for (const Case& c : Registry()) {
    const int before = Failures();
    c.fn();
    const bool ok = Failures() == before;
    failed_cases += ok ? 0 : 1;
    std::printf("[%s] %s\n", ok ? "PASS" : "FAIL", c.name);
  }
  std::printf("%zu cases, %d failed\n", Registry().size(), failed_cases);
  return failed_cases == 0 ? 0 : 1;
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST(name)                                                         \
  static void name();                                                      \
  static const check::Register CHECK_CAT(register_, name)(#name, &name);   \
  static void name()

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      ++check::Failures();                                                       \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);     \
    }                                                                            \
  } while (0)

#define CHECK_EQ(a, b)                                                                         \
  do {                                                                                         \
    const long long check_a = static_cast<long long>(a), check_b = static_cast<long long>(b); \
    if (check_a != check_b) {                                                                  \
      ++check::Failures();                                                                     \
      std::printf("  %s:%d: %s == %s failed: %lld vs %lld\n", __FILE__, __LINE__, #a, #b,      \
                  check_a, check_b);                                                           \
    }                                                                                          \
  } while (0)

#endif  // KWS_HOST_TEST_CHECK_H_
