#include "common/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace m2h {
namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

constexpr std::array<std::uint32_t, 256> make_table() {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (kPoly & (0u - (c & 1u)));
        t[i] = c;
    }
    return t;
}
constexpr auto kTable = make_table();

std::uint32_t crc_portable(const unsigned char* p, std::size_t n, std::uint32_t c) {
    while (n--) c = (c >> 8) ^ kTable[(c ^ *p++) & 0xFFu];
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc_sse42(const unsigned char* p, std::size_t n, std::uint32_t c) {
    std::uint64_t c64 = c;
    while (n >= 8) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    c = static_cast<std::uint32_t>(c64);
    while (n--) c = _mm_crc32_u8(c, *p++);
    return c;
}
const bool kHasSse42 = __builtin_cpu_supports("sse4.2");
#endif

// GF(2) matrix helpers for combining (the zeros-operator method).
std::uint32_t gf2_times(const std::array<std::uint32_t, 32>& m, std::uint32_t v) {
    std::uint32_t sum = 0;
    for (int i = 0; v; ++i, v >>= 1)
        if (v & 1u) sum ^= m[static_cast<std::size_t>(i)];
    return sum;
}

void gf2_square(std::array<std::uint32_t, 32>& out, const std::array<std::uint32_t, 32>& m) {
    for (std::size_t i = 0; i < 32; ++i) out[i] = gf2_times(m, m[i]);
}

}  // namespace

std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc) {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    std::uint32_t c = ~crc;
#if defined(__x86_64__)
    if (kHasSse42) return ~crc_sse42(p, data.size(), c);
#endif
    return ~crc_portable(p, data.size(), c);
}

std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t length_b) {
    if (length_b == 0) return crc_a;
    std::array<std::uint32_t, 32> odd{}, even{};
    odd[0] = kPoly;  // the operator for one zero bit
    for (std::size_t i = 1; i < 32; ++i) odd[i] = 1u << (i - 1);
    gf2_square(even, odd);  // two zero bits
    gf2_square(odd, even);  // four zero bits
    std::uint32_t c = crc_a;
    do {  // apply length_b zero bytes to crc_a, one bit of the length at a time
        gf2_square(even, odd);
        if (length_b & 1u) c = gf2_times(even, c);
        length_b >>= 1;
        if (!length_b) break;
        gf2_square(odd, even);
        if (length_b & 1u) c = gf2_times(odd, c);
        length_b >>= 1;
    } while (length_b);
    return c ^ crc_b;
}

}  // namespace m2h
