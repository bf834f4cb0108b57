#include "common/byte_size.hpp"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <utility>

#include "common/error.hpp"

namespace m2h {

std::uint64_t parse_byte_size(std::string_view text, const std::string& option) {
    static constexpr std::array<std::pair<std::string_view, std::uint64_t>, 10> units{{
        {"KIB", 1ull << 10}, {"MIB", 1ull << 20}, {"GIB", 1ull << 30}, {"TIB", 1ull << 40},
        {"KB", 1'000ull}, {"MB", 1'000'000ull}, {"GB", 1'000'000'000ull}, {"TB", 1'000'000'000'000ull},
        {"B", 1ull}, {"", 1ull},
    }};
    std::string s;
    for (char c : text)
        if (!std::isspace(static_cast<unsigned char>(c))) s += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::size_t digits = 0;
    while (digits < s.size() && (std::isdigit(static_cast<unsigned char>(s[digits])) || s[digits] == '.')) ++digits;
    const std::string number = s.substr(0, digits), unit = s.substr(digits);
    double value = 0;
    const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (number.empty() || ec != std::errc() || end != number.data() + number.size())
        throw Error(option, "expected a size such as 5GB, 512MiB or 1000000, got '" + std::string(text) + "'");
    for (const auto& [name, scale] : units) {
        if (unit != name) continue;
        const double bytes = std::floor(value * static_cast<double>(scale));
        if (!(bytes >= 1) || bytes > 1.8e19) throw Error(option, "size out of range: '" + std::string(text) + "'");
        return static_cast<std::uint64_t>(bytes);
    }
    throw Error(option, "unknown unit in '" + std::string(text) + "' (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
}

std::string format_bytes(std::uint64_t bytes) {
    char buf[32];
    const double b = static_cast<double>(bytes);
    if (b >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
    else if (b >= 1e6)
        std::snprintf(buf, sizeof buf, "%.2f MB", b / 1e6);
    else if (b >= 1e3)
        std::snprintf(buf, sizeof buf, "%.2f KB", b / 1e3);
    else
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
    return buf;
}

}  // namespace m2h
