#include "common/fault_injection.hpp"

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "common/error.hpp"

namespace m2h {

void fault_point(int rank, std::string_view stage) {
    static const char* spec = std::getenv("M2H_TEST_FAIL");
    if (spec == nullptr) return;
    const std::string s = spec, want = std::to_string(rank) + ":" + std::string(stage);
    if (s == want) throw Error("fault injection", "simulated failure at stage " + std::string(stage) + " on rank " + std::to_string(rank));
    if (s == want + ":internal")
        throw std::runtime_error("simulated internal failure at stage " + std::string(stage) + " on rank " + std::to_string(rank));
}

}  // namespace m2h
