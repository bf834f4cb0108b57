#pragma once
// CRC-32C (Castagnoli), the checksum of the output manifest: hardware-accelerated where the CPU has it, and
// combinable, so a tensor written in pieces by several ranks gets the checksum of its whole byte string.
#include <cstddef>
#include <cstdint>
#include <span>

namespace m2h {

std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc = 0);
// The CRC of A followed by B, from crc(A), crc(B) and B's length.
std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t length_b);

}  // namespace m2h
