#include <gtest/gtest.h>

#include <limits>

#include "common/error.hpp"
#include "io/byte_source.hpp"
#include "io/file.hpp"
#include "io/zip_archive.hpp"
#include "torch_test_util.hpp"

using m2h::Error;
using m2h::io::FileRegion;
using m2h::io::MemorySource;
using m2h::io::ZipArchive;
using namespace m2h::testutil;

namespace {

std::vector<ZipEntrySpec> sample_entries() {
    return {
        {"model_optim_rng/data.pkl", std::string("\x80\x02}q\x00.", 6)},
        {"model_optim_rng/data/0", std::string(24, '\x11')},
        {"model_optim_rng/data/1", ""},
        {"model_optim_rng/version", "3\n"},
    };
}

std::string read_string(const ZipArchive& z, const ZipArchive::Entry& e) { return as_string(z.read(e)); }

// Parses and reads every record; true on success, false on m2h::Error. Anything else fails the test.
bool parse_all(const ByteVec& bytes) {
    try {
        MemorySource src(bytes, "fuzz.zip");
        ZipArchive z(src);
        for (const auto& e : z.entries()) (void)z.read(e);
        return true;
    } catch (const Error&) {
        return false;
    } catch (const std::exception& ex) {
        ADD_FAILURE() << "unexpected exception type: " << ex.what();
        return false;
    }
}

std::string error_of(const ByteVec& bytes) {
    try {
        MemorySource src(bytes, "bad.zip");
        ZipArchive z(src);
        for (const auto& e : z.entries()) (void)z.read(e);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(ZipArchive, ReadsStoredRecordsAndPrefix) {
    const auto bytes = build_zip(sample_entries());
    MemorySource src(bytes, "mem.zip");
    ZipArchive z(src);
    EXPECT_EQ(z.prefix(), "model_optim_rng");
    ASSERT_EQ(z.entries().size(), 4u);
    const auto* pkl = z.find("data.pkl");
    ASSERT_NE(pkl, nullptr);
    EXPECT_EQ(pkl->size, 6u);
    EXPECT_EQ(z.data_offset(*pkl) % 64, 0u);  // FB padding in the local header only
    EXPECT_EQ(read_string(z, *pkl), std::string("\x80\x02}q\x00.", 6));
    ASSERT_NE(z.find("data/0"), nullptr);
    EXPECT_EQ(read_string(z, *z.find("data/0")), std::string(24, '\x11'));
    EXPECT_EQ(z.find("data/1")->size, 0u);
    EXPECT_TRUE(z.read(*z.find("data/1")).empty());
    EXPECT_EQ(z.find("data/2"), nullptr);
    EXPECT_EQ(z.find("model_optim_rng/data.pkl"), nullptr);  // names are relative to the prefix
}

TEST(ZipArchive, AlignmentIsNotAssumed) {
    ZipOptions o;
    o.alignment = 1;  // no padding at all
    const auto bytes = build_zip(sample_entries(), o);
    MemorySource src(bytes, "mem.zip");
    ZipArchive z(src);
    const auto* e = z.find("data/0");
    // data.pkl: header 30 + name 24 + FB 4 + data 6 + descriptor 16; then data/0's header 30 + name 22 + FB 4.
    EXPECT_EQ(z.data_offset(*e), 136u);
    EXPECT_EQ(read_string(z, *e), std::string(24, '\x11'));
}

TEST(ZipArchive, Zip64RecordIsPreferredOverSaturatedEocd) {
    ZipOptions o;
    o.saturate_eocd = true;
    const auto bytes = build_zip(sample_entries(), o);
    MemorySource src(bytes, "mem.zip");
    ZipArchive z(src);
    EXPECT_EQ(z.entries().size(), 4u);
    EXPECT_EQ(read_string(z, *z.find("version")), "3\n");
}

TEST(ZipArchive, SaturatedEocdWithoutZip64IsError) {
    ZipOptions o;
    o.saturate_eocd = true;
    o.zip64 = false;
    EXPECT_NE(error_of(build_zip(sample_entries(), o)), "");
}

TEST(ZipArchive, PlainArchiveWithoutZip64) {
    ZipOptions o;
    o.zip64 = false;
    const auto bytes = build_zip(sample_entries(), o);
    MemorySource src(bytes, "mem.zip");
    ZipArchive z(src);
    EXPECT_EQ(read_string(z, *z.find("data/0")), std::string(24, '\x11'));
}

TEST(ZipArchive, Zip64ExtraWithOnlyTheOffset) {
    ZipOptions o;
    o.saturate_offset = true;  // the extra holds one u64: the offset, not a size
    const auto bytes = build_zip(sample_entries(), o);
    MemorySource src(bytes, "mem.zip");
    ZipArchive z(src);
    const auto* e = z.find("data/0");
    EXPECT_EQ(e->size, 24u);
    EXPECT_GT(e->local_header_offset, 0u);
    EXPECT_NE(e->local_header_offset, 0xFFFFFFFFu);
    EXPECT_EQ(read_string(z, *e), std::string(24, '\x11'));
}

TEST(ZipArchive, Zip64ExtraWithAllFields) {
    ZipOptions o;
    o.saturate_sizes = true;
    o.saturate_offset = true;
    o.saturate_eocd = true;
    const auto bytes = build_zip(sample_entries(), o);
    MemorySource src(bytes, "mem.zip");
    ZipArchive z(src);
    const auto* e = z.find("data/0");
    EXPECT_EQ(e->size, 24u);
    EXPECT_EQ(e->compressed_size, 24u);
    EXPECT_EQ(read_string(z, *e), std::string(24, '\x11'));
    EXPECT_EQ(read_string(z, *z.find("data.pkl")), std::string("\x80\x02}q\x00.", 6));
}

TEST(ZipArchive, SaturatedFieldWithoutZip64ExtraIsError) {
    ZipOptions o;
    o.saturate_sizes = true;
    o.omit_zip64_extra = true;
    EXPECT_NE(error_of(build_zip(sample_entries(), o)).find("ZIP64"), std::string::npos);
}

TEST(ZipArchive, CommentUpToMaximumLength) {
    for (std::size_t len : {std::size_t{1}, std::size_t{1000}, std::size_t{65535}}) {
        ZipOptions o;
        o.comment = std::string(len, 'c');
        const auto bytes = build_zip(sample_entries(), o);
        MemorySource src(bytes, "mem.zip");
        ZipArchive z(src);
        EXPECT_EQ(read_string(z, *z.find("version")), "3\n") << "comment length " << len;
    }
}

TEST(ZipArchive, RefusesUnsafeEntryNames) {
    for (const char* name : {"../evil", "a/../../etc/passwd", "/abs/data.pkl", "a\\b", "a/.."}) {
        auto entries = sample_entries();
        entries.push_back({name, "x"});
        const auto msg = error_of(build_zip(entries));
        EXPECT_NE(msg.find("refusing entry name"), std::string::npos) << name << ": " << msg;
    }
    // A harmless name with dots is fine.
    auto entries = sample_entries();
    entries.push_back({"model_optim_rng/a..b", "x"});
    EXPECT_EQ(error_of(build_zip(entries)), "");
}

TEST(ZipArchive, FirstEntryWithoutSlashIsError) {
    const auto msg = error_of(build_zip({{"data.pkl", "x"}, {"a/b", "y"}}));
    EXPECT_NE(msg.find("no '/'"), std::string::npos) << msg;
}

TEST(ZipArchive, DuplicateNamesAreError) {
    EXPECT_NE(error_of(build_zip({{"a/x", "1"}, {"a/x", "2"}})).find("duplicate"), std::string::npos);
}

TEST(ZipArchive, CompressedRecordIsErrorOnRead) {
    auto entries = sample_entries();
    entries[1].method = 8;
    const auto bytes = build_zip(entries);
    MemorySource src(bytes, "mem.zip");
    ZipArchive z(src);  // listing is fine
    const auto* e = z.find("data/0");
    EXPECT_EQ(e->method, 8);
    EXPECT_THROW(z.data_offset(*e), Error);
    EXPECT_THROW(z.read(*e), Error);
    EXPECT_NO_THROW(z.read(*z.find("version")));
}

TEST(ZipArchive, EntryCountBeyondCentralDirectoryIsError) {
    auto bytes = build_zip(sample_entries(), ZipOptions{.zip64 = false});
    // EOCD: total entries at end-22+10; claim 60000 entries in a tiny directory.
    const std::size_t eocd = bytes.size() - 22;
    bytes[eocd + 8] = bytes[eocd + 10] = std::byte{0x60};
    bytes[eocd + 9] = bytes[eocd + 11] = std::byte{0xEA};
    EXPECT_NE(error_of(bytes).find("cannot hold"), std::string::npos);
}

TEST(ZipArchive, CentralDirectoryOutsideArchiveIsError) {
    auto bytes = build_zip(sample_entries(), ZipOptions{.zip64 = false});
    const std::size_t eocd = bytes.size() - 22;
    bytes[eocd + 19] = std::byte{0x7F};  // CD offset far past the end
    EXPECT_NE(error_of(bytes).find("outside the archive"), std::string::npos);
}

TEST(ZipArchive, Zip64LocatorPointingOutsideIsError) {
    auto bytes = build_zip(sample_entries());
    const std::size_t loc = bytes.size() - 22 - 20;
    bytes[loc + 15] = std::byte{0x01};  // high byte of the ZIP64 EOCD offset
    EXPECT_NE(error_of(bytes).find("ZIP64"), std::string::npos);
}

TEST(ZipArchive, LocalHeaderProblemsAreErrors) {
    {
        auto bytes = build_zip(sample_entries());
        bytes[0] = std::byte{'X'};  // bad local signature of data.pkl
        MemorySource src(bytes, "mem.zip");
        ZipArchive z(src);
        EXPECT_THROW(z.data_offset(*z.find("data.pkl")), Error);
    }
    {
        auto bytes = build_zip(sample_entries());
        bytes[28] = std::byte{0xFF};  // local extra length 0xFF.. pushes the data elsewhere
        bytes[29] = std::byte{0xFF};
        MemorySource src(bytes, "mem.zip");
        ZipArchive z(src);
        EXPECT_THROW(z.read(*z.find("data.pkl")), Error);
    }
    {
        auto bytes = build_zip(sample_entries());
        bytes[30] = std::byte{'X'};  // local name differs from the central one
        MemorySource src(bytes, "mem.zip");
        ZipArchive z(src);
        EXPECT_THROW(z.data_offset(*z.find("data.pkl")), Error);
    }
}

TEST(ZipArchive, NotAZip) {
    EXPECT_NE(error_of(to_bytes("PK")).find("not a zip"), std::string::npos);
    EXPECT_NE(error_of(ByteVec(100, std::byte{0})).find("not a zip"), std::string::npos);
    EXPECT_NE(error_of(build_zip({})).find("no entries"), std::string::npos);
}

TEST(ZipArchive, EveryTruncationIsAnError) {
    const auto full = build_zip(sample_entries());
    ASSERT_TRUE(parse_all(full));
    for (std::size_t n = 0; n < full.size(); ++n) {
        const ByteVec cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
        EXPECT_FALSE(parse_all(cut)) << "truncated to " << n << " bytes";
    }
}

TEST(ZipArchive, EveryByteFlipIsErrorOrSuccess) {
    for (const bool z64 : {true, false}) {
        ZipOptions o;
        o.zip64 = z64;
        o.saturate_offset = z64;
        const auto full = build_zip(sample_entries(), o);
        std::size_t errors = 0;
        for (std::size_t i = 0; i < full.size(); ++i) {
            for (const std::uint8_t x : {0xFF, 0x80, 0x01}) {
                auto bad = full;
                bad[i] ^= static_cast<std::byte>(x);
                if (!parse_all(bad)) ++errors;
            }
        }
        EXPECT_GT(errors, 0u);
    }
}

TEST(ZipByteSource, FileRegionSliceAndBounds) {
    TempDir dir;
    const auto bytes = build_zip(sample_entries());
    const auto path = dir.path() / "embedded.bin";
    write_file(path, bytes, 43);  // an archive inside a larger file, at an odd offset
    m2h::io::File f(path.string(), m2h::io::File::Mode::Read);
    FileRegion region(f, 43, bytes.size());
    EXPECT_EQ(region.size(), bytes.size());
    EXPECT_EQ(region.file_offset(10).value(), 53u);
    EXPECT_NE(region.name().find("embedded.bin"), std::string::npos);
    ZipArchive z(region);
    EXPECT_EQ(z.prefix(), "model_optim_rng");
    const auto* e = z.find("data/0");
    EXPECT_EQ(read_string(z, *e), std::string(24, '\x11'));
    EXPECT_EQ((z.data_offset(*e) + 43) % 64, 43u % 64);  // aligned within the archive, not the file

    std::vector<std::byte> buf(8);
    EXPECT_THROW(region.read(bytes.size() - 4, buf), Error);
    try {
        region.read(bytes.size(), buf);
        FAIL() << "read past the end succeeded";
    } catch (const Error& err) {
        EXPECT_NE(std::string(err.what()).find("embedded.bin"), std::string::npos);
    }

    FileRegion whole(f);
    EXPECT_EQ(whole.size(), bytes.size() + 86);
    EXPECT_EQ(whole.name(), path.string());
    EXPECT_THROW(FileRegion(f, 44, bytes.size() + 43), Error);
    EXPECT_THROW(FileRegion(f, std::numeric_limits<std::uint64_t>::max() - 1, 10), Error);  // overflow-safe
    EXPECT_THROW(FileRegion(f, 0, std::numeric_limits<std::uint64_t>::max()), Error);
    EXPECT_NO_THROW(FileRegion(f, whole.size(), 0));
}

TEST(ZipByteSource, MemorySourceBounds) {
    MemorySource m(to_bytes("abcdef"), "buffer 'x'");
    std::vector<std::byte> buf(3);
    m.read(3, buf);
    EXPECT_EQ(as_string(buf), "def");
    EXPECT_FALSE(m.file_offset(0).has_value());
    try {
        m.read(4, buf);
        FAIL() << "read past the end succeeded";
    } catch (const Error& err) {
        EXPECT_NE(std::string(err.what()).find("buffer 'x'"), std::string::npos);
    }
    EXPECT_THROW(m.read(std::numeric_limits<std::uint64_t>::max() - 1, buf), Error);
    std::vector<std::byte> none;
    EXPECT_NO_THROW(m.read(6, none));
}
