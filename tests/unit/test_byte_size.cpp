#include <gtest/gtest.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"

using m2h::parse_byte_size;

TEST(ByteSize, DecimalAndBinaryUnits) {
    EXPECT_EQ(parse_byte_size("5GB", "x"), 5'000'000'000ull);
    EXPECT_EQ(parse_byte_size("1GiB", "x"), 1ull << 30);
    EXPECT_EQ(parse_byte_size("512MiB", "x"), 512ull << 20);
    EXPECT_EQ(parse_byte_size("20KB", "x"), 20'000ull);
    EXPECT_EQ(parse_byte_size("1000", "x"), 1000ull);
    EXPECT_EQ(parse_byte_size("1.5 kb", "x"), 1500ull);
    EXPECT_EQ(parse_byte_size("2TiB", "x"), 2ull << 40);
}

TEST(ByteSize, RejectsNonsense) {
    for (const char* bad : {"", "GB", "-5GB", "5XB", "0", "1e99TB", "five"})
        EXPECT_THROW(parse_byte_size(bad, "--max-shard-size"), m2h::Error) << bad;
    try {
        parse_byte_size("5XB", "--max-shard-size");
    } catch (const m2h::Error& e) {
        EXPECT_NE(std::string(e.what()).find("--max-shard-size"), std::string::npos);
    }
}
