#pragma once
// "5GB" (decimal, as huggingface_hub), "1GiB" (binary), or plain bytes.
#include <cstdint>
#include <string>
#include <string_view>

namespace m2h {

// Throws m2h::Error naming `option` for anything else (negative, unknown unit, overflow).
std::uint64_t parse_byte_size(std::string_view text, const std::string& option);
std::string format_bytes(std::uint64_t bytes);  // "3.43 GB"

}  // namespace m2h
