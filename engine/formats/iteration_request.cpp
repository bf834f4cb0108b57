#include "formats/iteration_request.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "common/error.hpp"
#include "formats/checkpoint_discovery.hpp"

namespace m2h::formats {
namespace {

constexpr std::string_view kPlaceholder = "{iteration}";

std::int64_t number(std::string_view text, std::string_view whole) {
    std::int64_t n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || n < 0)
        throw Error("--iteration", "expected 'latest', 'all', N, N,M,... or A-B (non-negative numbers), got '" +
                                       std::string(whole) + "'");
    return n;
}

}  // namespace

IterationRequest parse_iteration_request(std::string_view text) {
    IterationRequest r;
    r.text = std::string(text);
    if (text == "latest") return r;
    if (text == "all") {
        r.kind = IterationRequest::Kind::All;
        return r;
    }
    if (const auto dash = text.find('-'); dash != std::string_view::npos) {
        r.kind = IterationRequest::Kind::Range;
        r.first = number(text.substr(0, dash), text);
        r.last = number(text.substr(dash + 1), text);
        if (r.first > r.last) throw Error("--iteration", "range '" + std::string(text) + "' ends before it starts");
        return r;
    }
    r.kind = IterationRequest::Kind::List;
    for (std::size_t start = 0;;) {
        const auto comma = text.find(',', start);
        r.numbers.push_back(number(text.substr(start, comma == std::string_view::npos ? text.npos : comma - start), text));
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    std::vector<std::int64_t> sorted = r.numbers;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
        throw Error("--iteration", "'" + std::string(text) + "' names an iteration twice");
    return r;
}

std::vector<std::int64_t> select_iterations(const IterationRequest& request, std::vector<std::int64_t> on_disk) {
    if (request.kind == IterationRequest::Kind::List) return request.numbers;
    std::sort(on_disk.begin(), on_disk.end());
    on_disk.erase(std::unique(on_disk.begin(), on_disk.end()), on_disk.end());
    if (request.kind == IterationRequest::Kind::Range)
        std::erase_if(on_disk, [&](std::int64_t n) { return n < request.first || n > request.last; });
    return on_disk;
}

bool has_iteration_placeholder(const std::string& pattern) { return pattern.find(kPlaceholder) != std::string::npos; }

std::string with_iteration(const std::string& pattern, std::int64_t iteration) {
    const auto digits = iteration_dir_name(iteration).substr(5);  // iter_0001000 -> 0001000
    std::string out;
    std::size_t from = 0;
    for (auto at = pattern.find(kPlaceholder); at != std::string::npos; at = pattern.find(kPlaceholder, from)) {
        out += pattern.substr(from, at - from) + digits;
        from = at + kPlaceholder.size();
    }
    return out + pattern.substr(from);
}

std::string output_for_iteration(const std::string& output, std::int64_t iteration) {
    if (has_iteration_placeholder(output)) return with_iteration(output, iteration);
    return output + (output.ends_with('/') ? "" : "/") + iteration_dir_name(iteration);
}

}  // namespace m2h::formats
