#pragma once
// Positioned reads from the sources of a plan: files opened on first use, and zstd items decompressed on first
// use and kept in a small cache bounded by bytes (pieces of one item usually come in a row).
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "io/file.hpp"
#include "plan/source_index.hpp"

namespace m2h::exchange {

class SourceReader {
public:
    SourceReader(const std::vector<plan::SourceFile>& files, std::uint64_t cache_bytes);
    void read_at(std::uint32_t file, std::uint64_t offset, std::span<std::byte> out);

private:
    const io::File& open(const std::string& path);
    const std::vector<std::byte>& decompressed(std::uint32_t file);

    const std::vector<plan::SourceFile>& files_;
    std::uint64_t cache_bytes_;
    std::map<std::string, std::unique_ptr<io::File>> open_;
    std::list<std::pair<std::uint32_t, std::vector<std::byte>>> cache_;  // most recent first
};

}  // namespace m2h::exchange
