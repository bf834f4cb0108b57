#pragma once
// Reads a safetensors header and applies the reference reader's rules (huggingface/safetensors): header
// length limits, JSON shape, known dtypes, offsets that tile the data buffer exactly, sizes that match
// shapes, and a file that ends where the last tensor ends. Validation is kept apart from parsing: parse
// collects, validate judges.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/dtype.hpp"
#include "io/file.hpp"

namespace m2h::io {

struct SafetensorsEntry {
    std::string name;
    DType dtype = DType::U8;
    std::vector<std::uint64_t> shape;
    std::uint64_t begin = 0, end = 0;  // relative to the data buffer
};

struct SafetensorsHeader {
    std::uint64_t header_size = 0;  // N, the JSON length including padding
    std::map<std::string, std::string> metadata;
    std::vector<SafetensorsEntry> tensors;  // in header order
    std::uint64_t data_start() const { return 8 + header_size; }
};

constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

// `bytes` holds the file's first 8 + N bytes (or at least the 8-byte prefix: a short buffer is an error that
// says how many bytes are needed); `file_size` is the whole file's size. Throws m2h::Error naming `name`.
SafetensorsHeader parse_safetensors_header(std::span<const std::byte> bytes, std::uint64_t file_size,
                                           const std::string& name);
SafetensorsHeader read_safetensors_header(const File& file);

}  // namespace m2h::io
