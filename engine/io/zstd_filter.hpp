#pragma once
// The HDF5 zstd filter, registered id 32015, in its standard form: cd_values[0] is the compression level
// (optional, default 3), and each chunk is stored as one plain zstd frame that records its content size. This
// is what the widely used hdf5plugin (and the original HDF5Plugin-Zstandard) writes and reads, so files are
// readable by any HDF5 program with such a plugin.
//
// This code calls no HDF5 function: the engine registers it with H5Zregister (io/hdf5_writer.cpp) and the
// dynamic plugin (plugin/h5zstd_plugin.cpp) hands the same class to whatever HDF5 library loads it, which may
// be another build than the engine's (h5py's serial library, h5dump). Chunk buffers are therefore managed with
// malloc/free, which is what HDF5's own chunk buffers are in release builds (H5MM_malloc is malloc).
#include <cstddef>

#include <hdf5.h>  // H5Z_class2_t and H5Z_* constants only; no HDF5 function is called

namespace m2h::io {

inline constexpr H5Z_filter_t kZstdFilterId = 32015;
inline constexpr int kZstdDefaultLevel = 3;
// Decompressed chunks are never larger than an HDF5 chunk can be; a frame that claims more is damaged.
inline constexpr std::size_t kZstdMaxChunkBytes = 0xFFFFFFFFull;

// The H5Z_func_t callback. Compresses (flags without H5Z_FLAG_REVERSE) or decompresses *buf in place,
// replacing it with a new malloc'd buffer; returns the new data size, or 0 on failure (the buffer is kept).
extern "C" std::size_t m2h_zstd_filter(unsigned int flags, std::size_t cd_nelmts, const unsigned int cd_values[],
                                       std::size_t nbytes, std::size_t* buf_size, void** buf);

// The filter's class (version 2), for H5Zregister and H5PLget_plugin_info.
const H5Z_class2_t* zstd_filter_class();

// Whether `level` is a compression level libzstd accepts (ZSTD_minCLevel() .. ZSTD_maxCLevel()).
bool zstd_level_valid(int level);

}  // namespace m2h::io
