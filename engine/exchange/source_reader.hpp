#pragma once
// Positioned reads from the sources of a plan: files opened on first use and kept open, the most recently used
// 64 at most (a writer may read from every rank file of a large torch_dist checkpoint), and zstd items
// decompressed on first use and kept in a small cache bounded by bytes (pieces of one item usually come in a row).
// With a pacer, every read from disk (a range, or a compressed item on a cache miss) is paced (read_pacer.hpp).
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "exchange/read_pacer.hpp"
#include "io/file.hpp"
#include "tensors/source_index.hpp"

namespace m2h::exchange {

class SourceReader {
public:
    SourceReader(const std::vector<tensors::SourceFile>& files, std::uint64_t cache_bytes, ReadPacer* pacer = nullptr);
    void read_at(std::uint32_t file, std::uint64_t offset, std::span<std::byte> out);

private:
    const io::File& open(const std::string& path);
    const std::vector<std::byte>& decompressed(std::uint32_t file);

    const std::vector<tensors::SourceFile>& files_;
    std::uint64_t cache_bytes_;
    ReadPacer* pacer_;  // may be null
    using OpenFiles = std::list<std::pair<std::string, std::unique_ptr<io::File>>>;  // most recent first
    OpenFiles open_;
    std::map<std::string, OpenFiles::iterator> by_path_;
    std::list<std::pair<std::uint32_t, std::vector<std::byte>>> cache_;  // most recent first
};

}  // namespace m2h::exchange
