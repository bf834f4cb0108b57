#include "io/zip_archive.hpp"

#include <algorithm>

#include "common/error.hpp"

namespace m2h::io {
namespace {

constexpr std::uint32_t kLocalSig = 0x04034B50;
constexpr std::uint32_t kCentralSig = 0x02014B50;
constexpr std::uint32_t kEocdSig = 0x06054B50;
constexpr std::uint32_t kZip64EocdSig = 0x06064B50;
constexpr std::uint32_t kZip64LocatorSig = 0x07064B50;
constexpr std::uint64_t kLocalSize = 30;
constexpr std::uint64_t kCentralSize = 46;
constexpr std::uint64_t kEocdSize = 22;
constexpr std::uint64_t kLocatorSize = 20;
constexpr std::uint64_t kZip64EocdSize = 56;
constexpr std::uint64_t kMaxComment = 65535;
constexpr std::uint64_t kMaxCentralDirectory = std::uint64_t{1} << 30;  // ~10 million entries
constexpr std::uint32_t kSaturated32 = 0xFFFFFFFF;

bool fits(std::uint64_t offset, std::uint64_t n, std::uint64_t size) { return offset <= size && n <= size - offset; }

std::uint64_t le(std::span<const std::byte> b, std::size_t at, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= std::uint64_t{static_cast<unsigned char>(b[at + i])} << (8 * i);
    return v;
}

std::vector<std::byte> read_bytes(const ByteSource& s, std::uint64_t offset, std::uint64_t n) {
    std::vector<std::byte> buf(static_cast<std::size_t>(n));
    s.read(offset, buf);
    return buf;
}

// Entry names come from an untrusted file and may one day be used to build paths: refuse anything that
// could climb out of a directory.
const char* bad_name(std::string_view name) {
    if (name.empty()) return "empty";
    if (name.find('\0') != std::string_view::npos) return "contains a NUL byte";
    if (name.front() == '/') return "is an absolute path";
    if (name.find('\\') != std::string_view::npos) return "contains a backslash";
    std::size_t start = 0;
    while (start <= name.size()) {
        const auto slash = name.find('/', start);
        const auto part = name.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
        if (part == "..") return "contains a '..' component";
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    return nullptr;
}

}  // namespace

ZipArchive::ZipArchive(const ByteSource& source) : source_(&source) {
    const std::string where = source.name();
    const auto fail = [&where](const std::string& problem) -> void { throw Error(where, "zip: " + problem); };
    const std::uint64_t size = source.size();
    if (size < kEocdSize) fail("not a zip archive (only " + std::to_string(size) + " bytes)");

    // The EOCD is the last record; only a comment (at most 65535 bytes) may follow it. torch writes no comment,
    // so the last 22 bytes are tried first: reading 64 KiB per embedded archive would dwarf small DCP items.
    std::uint64_t tail_len = kEocdSize;
    std::uint64_t tail_start = size - tail_len;
    auto tail = read_bytes(source, tail_start, tail_len);
    if (le(tail, 0, 4) != kEocdSig || le(tail, 20, 2) != 0) {
        tail_len = std::min(size, kEocdSize + kMaxComment);
        tail_start = size - tail_len;
        tail = read_bytes(source, tail_start, tail_len);
    }
    std::uint64_t eocd = 0;
    bool found = false;
    for (std::uint64_t p = tail_len - kEocdSize + 1; p-- > 0;) {
        if (le(tail, p, 4) == kEocdSig && p + kEocdSize + le(tail, p + 20, 2) <= tail_len) {
            eocd = tail_start + p;
            found = true;
            break;
        }
    }
    if (!found) fail("not a zip archive (no end-of-central-directory record)");
    const std::span<const std::byte> e(tail.data() + (eocd - tail_start), kEocdSize);
    std::uint64_t disk = le(e, 4, 2), cd_disk = le(e, 6, 2);
    std::uint64_t entries_here = le(e, 8, 2), count = le(e, 10, 2);
    std::uint64_t cd_size = le(e, 12, 4), cd_offset = le(e, 16, 4);
    std::uint64_t cd_limit = eocd;  // the central directory must end before what follows it

    // ZIP64: torch always writes it, and above 4 GiB the EOCD fields are saturated placeholders.
    if (eocd >= kLocatorSize) {
        const auto loc = read_bytes(source, eocd - kLocatorSize, kLocatorSize);
        if (le(loc, 0, 4) == kZip64LocatorSig) {
            const std::uint64_t z = le(loc, 8, 8);
            if (!fits(z, kZip64EocdSize, eocd - kLocatorSize))
                fail("ZIP64 end-of-central-directory offset " + std::to_string(z) + " is outside the archive");
            const auto r = read_bytes(source, z, kZip64EocdSize);
            if (le(r, 0, 4) != kZip64EocdSig) fail("bad ZIP64 end-of-central-directory signature");
            if (le(r, 4, 8) < kZip64EocdSize - 12) fail("ZIP64 end-of-central-directory record too short");
            // Writers (miniz for torch.save, zipfile, libzip) saturate an EOCD field only when it does not fit;
            // otherwise it holds the real value, which must be the ZIP64 record's.
            const auto agree = [&](const char* what, std::uint64_t classic, std::uint64_t saturated, std::uint64_t zip64) {
                if (classic != saturated && classic != zip64)
                    fail(std::string("end-of-central-directory ") + what + " " + std::to_string(classic) +
                         " disagrees with the ZIP64 record's " + std::to_string(zip64));
            };
            agree("entry count on this disk", entries_here, 0xFFFF, le(r, 24, 8));
            agree("entry count", count, 0xFFFF, le(r, 32, 8));
            agree("central directory size", cd_size, kSaturated32, le(r, 40, 8));
            agree("central directory offset", cd_offset, kSaturated32, le(r, 48, 8));
            disk = le(r, 16, 4);
            cd_disk = le(r, 20, 4);
            entries_here = le(r, 24, 8);
            count = le(r, 32, 8);
            cd_size = le(r, 40, 8);
            cd_offset = le(r, 48, 8);
            cd_limit = z;
        }
    }
    if (disk != 0 || cd_disk != 0 || entries_here != count) fail("multi-disk archives are not supported");
    if (!fits(cd_offset, cd_size, cd_limit))
        fail("central directory (offset " + std::to_string(cd_offset) + ", " + std::to_string(cd_size) +
             " bytes) lies outside the archive");
    if (count > cd_size / kCentralSize)
        fail("central directory of " + std::to_string(cd_size) + " bytes cannot hold " + std::to_string(count) +
             " entries");
    if (cd_size > kMaxCentralDirectory) fail("central directory of " + std::to_string(cd_size) + " bytes is too large");
    if (count == 0) fail("archive has no entries");

    const auto cd = read_bytes(source, cd_offset, cd_size);
    entries_.reserve(static_cast<std::size_t>(count));
    std::uint64_t p = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        if (!fits(p, kCentralSize, cd_size)) fail("central directory entry " + std::to_string(i) + " is truncated");
        if (le(cd, p, 4) != kCentralSig) fail("bad central directory signature at entry " + std::to_string(i));
        Entry en;
        en.method = static_cast<std::uint16_t>(le(cd, p + 10, 2));
        en.crc32 = static_cast<std::uint32_t>(le(cd, p + 16, 4));
        en.compressed_size = le(cd, p + 20, 4);
        en.size = le(cd, p + 24, 4);
        const std::uint64_t name_len = le(cd, p + 28, 2), extra_len = le(cd, p + 30, 2), comment_len = le(cd, p + 32, 2);
        en.local_header_offset = le(cd, p + 42, 4);
        const std::uint64_t var = name_len + extra_len + comment_len;
        if (!fits(p + kCentralSize, var, cd_size)) fail("central directory entry " + std::to_string(i) + " is truncated");
        en.name.assign(reinterpret_cast<const char*>(cd.data() + p + kCentralSize), static_cast<std::size_t>(name_len));
        if (const char* why = bad_name(en.name)) fail("refusing entry name '" + en.name + "': " + why);

        // ZIP64 extra: u64 values for the saturated fields only, in the order usize, csize, offset.
        bool need_usize = en.size == kSaturated32, need_csize = en.compressed_size == kSaturated32,
             need_offset = en.local_header_offset == kSaturated32;
        std::uint64_t x = p + kCentralSize + name_len;
        const std::uint64_t x_end = x + extra_len;
        while (x_end - x >= 4) {
            const std::uint64_t id = le(cd, x, 2), len = le(cd, x + 2, 2);
            x += 4;
            if (len > x_end - x) fail("entry '" + en.name + "': extra field runs past its end");
            if (id == 0x0001) {
                std::uint64_t q = x;
                const auto take = [&](bool& needed, std::uint64_t& field) {
                    if (!needed) return;
                    if (x + len - q < 8) fail("entry '" + en.name + "': ZIP64 extra field too short");
                    field = le(cd, q, 8);
                    q += 8;
                    needed = false;
                };
                take(need_usize, en.size);
                take(need_csize, en.compressed_size);
                take(need_offset, en.local_header_offset);
            }
            x += len;
        }
        if (need_usize || need_csize || need_offset)
            fail("entry '" + en.name + "': saturated size or offset without a ZIP64 extra field");
        if (!by_name_.emplace(en.name, entries_.size()).second) fail("duplicate entry '" + en.name + "'");
        entries_.push_back(std::move(en));
        p += kCentralSize + var;
    }

    // torch.load takes the archive name from the first entry; it is not always the file's stem.
    const auto slash = entries_.front().name.find('/');
    if (slash == std::string::npos) fail("first entry '" + entries_.front().name + "' has no '/' (no archive prefix)");
    prefix_ = entries_.front().name.substr(0, slash);
}

const ZipArchive::Entry* ZipArchive::find(std::string_view record) const {
    std::string full;
    full.reserve(prefix_.size() + 1 + record.size());
    full.append(prefix_).append("/").append(record);
    const auto it = by_name_.find(full);
    return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::uint64_t ZipArchive::data_offset(const Entry& entry) const {
    const auto fail = [&](const std::string& problem) -> void {
        throw Error(source_->name(), "zip: record '" + entry.name + "': " + problem);
    };
    if (entry.method != 0)
        fail("is compressed (method " + std::to_string(entry.method) + "); only stored records can be read");
    if (entry.compressed_size != entry.size) fail("stored record with compressed size != size");
    const std::uint64_t size = source_->size();
    const std::uint64_t lh = entry.local_header_offset;
    if (!fits(lh, kLocalSize, size)) fail("local header offset " + std::to_string(lh) + " is outside the archive");
    const auto h = read_bytes(*source_, lh, kLocalSize);
    if (le(h, 0, 4) != kLocalSig) fail("bad local header signature at offset " + std::to_string(lh));
    // Name and extra lengths from the LOCAL header: its extra (padding) differs from the central one.
    const std::uint64_t name_len = le(h, 26, 2), extra_len = le(h, 28, 2);
    if (!fits(lh + kLocalSize, name_len + extra_len, size)) fail("local header runs past the end of the archive");
    const auto name = read_bytes(*source_, lh + kLocalSize, name_len);
    if (std::string_view(reinterpret_cast<const char*>(name.data()), name.size()) != entry.name)
        fail("local header names a different record");
    const std::uint64_t data = lh + kLocalSize + name_len + extra_len;
    if (!fits(data, entry.size, size))
        fail(std::to_string(entry.size) + " bytes at offset " + std::to_string(data) + " run past the end (size " +
             std::to_string(size) + ")");
    return data;
}

std::vector<std::byte> ZipArchive::read(const Entry& entry) const {
    const auto offset = data_offset(entry);
    return read_bytes(*source_, offset, entry.size);
}

}  // namespace m2h::io
