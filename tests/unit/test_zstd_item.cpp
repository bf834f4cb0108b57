#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include <zstd.h>

#include "common/error.hpp"
#include "io/zstd_item.hpp"

using namespace m2h;

namespace {

struct ItemFile {
    std::string path;
    std::uint64_t offset = 0, length = 0;
    std::vector<std::byte> plain;
    ~ItemFile() { std::filesystem::remove(path); }
};

// A file with 100 bytes of padding, then one zstd frame of `n` compressible bytes, then trailing bytes.
std::unique_ptr<ItemFile> make_item(std::size_t n, const std::string& name) {
    auto f = std::make_unique<ItemFile>();
    f->path = (std::filesystem::temp_directory_path() / name).string();
    std::mt19937 rng(3);
    for (std::size_t i = 0; i < n; ++i) f->plain.push_back(static_cast<std::byte>(rng() % 7));
    std::vector<std::byte> z(ZSTD_compressBound(n));
    const auto zn = ZSTD_compress(z.data(), z.size(), f->plain.data(), n, 3);
    EXPECT_FALSE(ZSTD_isError(zn));
    z.resize(zn);
    io::File out(f->path, io::File::Mode::CreateTruncate);
    std::vector<std::byte> pad(100, std::byte{0x5A});
    out.write_at(0, pad);
    out.write_at(100, z);
    out.write_at(100 + zn, pad);
    f->offset = 100;
    f->length = zn;
    return f;
}

}  // namespace

TEST(ZstdItem, DecompressesOneItemOfAFile) {
    auto f = make_item(300000, "m2h_zstd_ok");
    io::File file(f->path, io::File::Mode::Read);
    EXPECT_EQ(io::decompress_zstd_item(file, f->offset, f->length, 1 << 20), f->plain);
}

TEST(ZstdItem, TruncatedCorruptAndOversizedItemsAreErrors) {
    auto f = make_item(300000, "m2h_zstd_bad");
    io::File file(f->path, io::File::Mode::Read);
    EXPECT_THROW(io::decompress_zstd_item(file, f->offset, f->length - 10, 1 << 20), Error);
    EXPECT_THROW(io::decompress_zstd_item(file, f->offset + 1, f->length, 1 << 20), Error);
    EXPECT_THROW(io::decompress_zstd_item(file, f->offset, f->length, 1000), Error);  // bomb guard
    EXPECT_THROW(io::decompress_zstd_item(file, f->offset, f->length + 10'000'000, 1 << 20), Error);  // past the end
    try {
        io::decompress_zstd_item(file, f->offset, f->length - 10, 1 << 20);
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(f->path), std::string::npos);
    }
}
