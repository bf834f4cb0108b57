#pragma once
// --iteration: one iteration ("latest" or N) or several ("N,M,...", a range "A-B", "all"), and where each of
// several goes. Pure: the iterations on disk are given.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::formats {

struct IterationRequest {
    enum class Kind { Latest, List, Range, All };
    Kind kind = Kind::Latest;
    std::vector<std::int64_t> numbers;  // List, in the order given
    std::int64_t first = 0, last = 0;   // Range, both included
    std::string text;                   // as given, for one iteration ("latest" or N)

    // More than one output: a list of several, a range or all (even when only one iteration matches).
    bool several() const { return kind == Kind::Range || kind == Kind::All || numbers.size() > 1; }
};

// Throws m2h::Error("--iteration", ...) for anything else, naming what is accepted.
IterationRequest parse_iteration_request(std::string_view text);

// The iterations to convert: a list as given (one not on disk is the conversion's error to report), a range or
// all as the iter_* folders on disk select them, in ascending order.
std::vector<std::int64_t> select_iterations(const IterationRequest& request, std::vector<std::int64_t> on_disk);

// "{iteration}" in `pattern` replaced with the iteration, zero-padded to 7 digits as Megatron names its folders.
bool has_iteration_placeholder(const std::string& pattern);
std::string with_iteration(const std::string& pattern, std::int64_t iteration);

// Where one of several iterations goes: `output` with "{iteration}" replaced, or, without it, OUTPUT/iter_0001000.
std::string output_for_iteration(const std::string& output, std::int64_t iteration);

}  // namespace m2h::formats
