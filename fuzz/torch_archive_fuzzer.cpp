// libFuzzer target: see fuzz_entries.hpp for what m2h::fuzz::torch_archive does. Only m2h::Error is an accepted outcome
// besides success; every other exception escapes and libFuzzer reports it as a crash.
#include <cstddef>
#include <cstdint>

#include "common/error.hpp"
#include "fuzz_entries.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        m2h::fuzz::torch_archive({data, size});
    } catch (const m2h::Error&) {
    }
    return 0;
}
