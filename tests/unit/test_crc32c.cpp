#include <gtest/gtest.h>

#include <random>
#include <string>

#include "common/crc32c.hpp"

using m2h::crc32c;

namespace {
std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }
}  // namespace

TEST(Crc32c, KnownVectors) {
    EXPECT_EQ(crc32c(bytes("")), 0u);
    EXPECT_EQ(crc32c(bytes("123456789")), 0xE3069283u);  // the standard check value of CRC-32C
    EXPECT_EQ(crc32c(bytes(std::string(32, '\0'))), 0x8A9136AAu);  // RFC 3720 B.4
    EXPECT_EQ(crc32c(bytes(std::string(32, '\xFF'))), 0x62A8AB43u);
}

TEST(Crc32c, IncrementalAndCombinedEqualWhole) {
    std::mt19937 rng(5);
    std::string s(100003, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    const auto whole = crc32c(bytes(s));
    for (std::size_t cut : {0ul, 1ul, 7ul, 8ul, 4096ul, 50000ul, 100002ul, 100003ul}) {
        const std::string a = s.substr(0, cut), b = s.substr(cut);
        EXPECT_EQ(crc32c(bytes(b), crc32c(bytes(a))), whole) << cut;
        EXPECT_EQ(m2h::crc32c_combine(crc32c(bytes(a)), crc32c(bytes(b)), b.size()), whole) << cut;
    }
}
