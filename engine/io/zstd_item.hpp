#pragma once
// DCP's `stream.zstd` transform: an item's bytes are one or more zstd frames holding a torch.save archive.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/file.hpp"

namespace m2h::io {

// Decompresses [offset, offset+length) of `file`. Output larger than `max_bytes` is an Error (a bomb or a
// damaged item), as is anything libzstd rejects; errors name the file and the item.
std::vector<std::byte> decompress_zstd_item(const File& file, std::uint64_t offset, std::uint64_t length,
                                            std::uint64_t max_bytes);

}  // namespace m2h::io
