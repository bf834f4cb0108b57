#pragma once
// Reads the records of a zip archive (the container of torch.save) by offset, from its central directory.
// Sizes always come from the central directory (torch writes zeros in local headers); ZIP64 is honoured.
// Only stored (uncompressed) records can be read.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/byte_source.hpp"

namespace m2h::io {

class ZipArchive {
public:
    struct Entry {
        std::string name;           // full name, e.g. "model_optim_rng/data/3"
        std::uint64_t size = 0;     // uncompressed size
        std::uint64_t compressed_size = 0;
        std::uint64_t local_header_offset = 0;
        std::uint16_t method = 0;
        std::uint32_t crc32 = 0;
    };

    explicit ZipArchive(const ByteSource& source);  // parses EOCD (+ZIP64) and the central directory

    const std::vector<Entry>& entries() const noexcept { return entries_; }
    // The archive name before the first '/' of the first entry ("model_optim_rng", "archive", ...).
    std::string_view prefix() const noexcept { return prefix_; }
    // Finds "<prefix>/<record>"; nullptr when absent.
    const Entry* find(std::string_view record) const;
    // Offset (relative to the source) of the first data byte, from the local header; checks that
    // [offset, offset+size) lies inside the source and that the record is stored uncompressed.
    std::uint64_t data_offset(const Entry& entry) const;
    std::vector<std::byte> read(const Entry& entry) const;  // small records only (data.pkl, byteorder)
    const ByteSource& source() const noexcept { return *source_; }

private:
    const ByteSource* source_;
    std::vector<Entry> entries_;
    std::string prefix_;
    std::unordered_map<std::string, std::size_t> by_name_;
};

}  // namespace m2h::io
