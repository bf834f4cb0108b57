#include "io/zstd_item.hpp"

#include <memory>

#include <zstd.h>

#include "common/error.hpp"
#include "io/byte_source.hpp"

namespace m2h::io {

std::vector<std::byte> decompress_zstd_item(const File& file, std::uint64_t offset, std::uint64_t length,
                                            std::uint64_t max_bytes) {
    const std::string where = file.path() + " [zstd item at " + std::to_string(offset) + "]";
    FileRegion region(file, offset, length);
    std::vector<std::byte> in(length);
    region.read(0, in);

    std::unique_ptr<ZSTD_DStream, decltype(&ZSTD_freeDStream)> stream(ZSTD_createDStream(), &ZSTD_freeDStream);
    if (!stream) throw Error(where, "cannot create a zstd decoder");
    std::vector<std::byte> out;
    std::vector<std::byte> block(ZSTD_DStreamOutSize());
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    std::size_t last = 0;
    while (input.pos < input.size) {
        ZSTD_outBuffer output{block.data(), block.size(), 0};
        last = ZSTD_decompressStream(stream.get(), &output, &input);
        if (ZSTD_isError(last)) throw Error(where, std::string("zstd: ") + ZSTD_getErrorName(last));
        if (out.size() + output.pos > max_bytes)
            throw Error(where, "decompresses to more than " + std::to_string(max_bytes) + " bytes");
        out.insert(out.end(), block.begin(), block.begin() + static_cast<std::ptrdiff_t>(output.pos));
        if (output.pos == 0 && last != 0 && input.pos == input.size) break;
    }
    // Flush what the decoder still holds once the input is consumed.
    while (last != 0) {
        ZSTD_outBuffer output{block.data(), block.size(), 0};
        last = ZSTD_decompressStream(stream.get(), &output, &input);
        if (ZSTD_isError(last)) throw Error(where, std::string("zstd: ") + ZSTD_getErrorName(last));
        if (output.pos == 0) break;
        if (out.size() + output.pos > max_bytes)
            throw Error(where, "decompresses to more than " + std::to_string(max_bytes) + " bytes");
        out.insert(out.end(), block.begin(), block.begin() + static_cast<std::ptrdiff_t>(output.pos));
    }
    if (last != 0) throw Error(where, "zstd: truncated frame");
    return out;
}

}  // namespace m2h::io
