#include "io/hdf5_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "common/error.hpp"
#include "io/staging_dir.hpp"
#include "io/zstd_filter.hpp"

namespace m2h::io {
namespace fs = std::filesystem;
using h5::check;

namespace {

constexpr std::uint64_t kMaxChunkBytes = 0xFFFFFFFFull;  // HDF5's limit on one chunk

std::vector<std::string> split_group(const std::string& group) {
    std::vector<std::string> parts;
    std::size_t at = 0;
    while (true) {
        const auto slash = group.find('/', at);
        parts.push_back(group.substr(at, slash == std::string::npos ? std::string::npos : slash - at));
        if (slash == std::string::npos) break;
        at = slash + 1;
    }
    return parts;
}

// "a/b" -> "a/.b.m2h-partial"
std::string staging_group_for(const std::string& group) {
    const auto slash = group.rfind('/');
    const std::string parent = slash == std::string::npos ? "" : group.substr(0, slash + 1);
    const std::string leaf = slash == std::string::npos ? group : group.substr(slash + 1);
    return parent + "." + leaf + ".m2h-partial";
}

// Whether the link `path` (relative to `loc`) exists, every intermediate group included.
bool link_exists(hid_t loc, const std::string& path, const std::string& where) {
    std::string prefix;
    for (const auto& part : split_group(path)) {
        prefix += (prefix.empty() ? "" : "/") + part;
        if (!check(H5Lexists(loc, prefix.c_str(), H5P_DEFAULT), where, "cannot look up '" + prefix + "'")) return false;
    }
    return true;
}

h5::PropList make_plist(hid_t cls, const std::string& where) {
    return h5::PropList(check(H5Pcreate(cls), where, "H5Pcreate"));
}

void write_attribute(hid_t loc, const Hdf5Attribute& a, const std::string& where) {
    const std::string what = "cannot write attribute '" + a.name + "'";
    h5::Dataspace scalar(check(H5Screate(H5S_SCALAR), where, what));
    if (const auto* s = std::get_if<std::string>(&a.value)) {
        h5::Type type(check(H5Tcopy(H5T_C_S1), where, what));
        check(H5Tset_size(type.id(), H5T_VARIABLE), where, what);
        check(H5Tset_cset(type.id(), H5T_CSET_UTF8), where, what);
        h5::Attribute attr(check(H5Acreate2(loc, a.name.c_str(), type.id(), scalar.id(), H5P_DEFAULT, H5P_DEFAULT), where, what));
        const char* text = s->c_str();
        check(H5Awrite(attr.id(), type.id(), &text), where, what);
    } else {
        const std::int64_t v = std::get<std::int64_t>(a.value);
        h5::Attribute attr(check(H5Acreate2(loc, a.name.c_str(), H5T_STD_I64LE, scalar.id(), H5P_DEFAULT, H5P_DEFAULT), where, what));
        check(H5Awrite(attr.id(), H5T_NATIVE_INT64, &v), where, what);
    }
}

// The HDF5 signature at offset 0, 512, 1024, 2048, ... (after a user block), as the library looks for it; read
// here so that a file system without locks cannot make a real HDF5 file look foreign.
bool has_hdf5_signature(int fd) {
    static constexpr unsigned char kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char head[8];
    for (off_t at = 0;; at = at ? at * 2 : 512) {
        const ssize_t n = ::pread(fd, head, sizeof head, at);
        if (n != static_cast<ssize_t>(sizeof head)) return false;
        if (std::memcmp(head, kSignature, sizeof head) == 0) return true;
    }
}

}  // namespace

std::vector<RowRun> merge_row_runs(std::vector<RowRun> runs, std::uint64_t row_bytes) {
    std::sort(runs.begin(), runs.end(), [](const RowRun& a, const RowRun& b) { return a.first_row < b.first_row; });
    std::vector<RowRun> merged;
    for (const auto& r : runs) {
        if (!r.rows) continue;
        if (!merged.empty()) {
            auto& last = merged.back();
            if (last.first_row + last.rows == r.first_row && last.data + last.rows * row_bytes == r.data) {
                last.rows += r.rows;
                continue;
            }
        }
        merged.push_back(r);
    }
    return merged;
}

void init_hdf5() {
    static bool done = false;
    if (done) return;
    h5::silence_errors();
    if (H5Zregister(zstd_filter_class()) < 0) throw Error("HDF5", "cannot register the zstd filter: " + h5::last_error());
    done = true;
}

void check_hdf5_group_name(const std::string& group) {
    if (group.empty()) throw Error("--group", "the group name is empty");
    const auto parts = split_group(group);
    for (const auto& p : parts)
        if (p.empty() || p == "." || p == "..")
            throw Error("--group", "'" + group + "' is not a group path (parts separated by single '/', no '.' or '..')");
    if (parts.back().front() == '.')
        throw Error("--group", "'" + group + "': names starting with '.' are kept for unfinished groups");
}

Hdf5Target prepare_hdf5_output(const std::string& path, const std::string& group, bool overwrite) {
    fs::path p = fs::absolute(path).lexically_normal();
    if (p.filename().empty()) throw Error(path, "--output must name a file (an .h5 file) with --format hdf5");
    Hdf5Target t;
    t.final_path = p.string();
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (fs::exists(st)) {
        if (fs::is_directory(st)) throw Error(t.final_path, "is a folder; --format hdf5 writes one .h5 file");
        if (!fs::is_regular_file(st)) throw Error(t.final_path, "is not a regular file");
        const int fd = ::open(t.final_path.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) throw Error(t.final_path, std::string("cannot open for writing: ") + std::strerror(errno));
        const bool hdf5 = has_hdf5_signature(fd);
        ::close(fd);
        if (!hdf5) throw Error(t.final_path, "exists and is not an HDF5 file (not replacing it)");
        auto fapl = make_plist(H5P_FILE_ACCESS, t.final_path);
        // Lock where the file system can (a writer elsewhere is then noticed), go on where it cannot.
        check(H5Pset_file_locking(fapl.id(), true, true), t.final_path, "H5Pset_file_locking");
        h5::File f(check(H5Fopen(t.final_path.c_str(), H5F_ACC_RDONLY, fapl.id()), t.final_path,
                         "cannot open the HDF5 file"));
        if (link_exists(f.id(), group, t.final_path) && !overwrite)
            throw Error(t.final_path, "group '" + group + "' already exists (pass --overwrite to replace it)");
        t.open_path = t.final_path;
        return t;
    }
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw Error(p.parent_path().string(), "cannot create: " + ec.message());
    t.open_path = staging_path_for(t.final_path);
    t.created = true;
    fs::remove(t.open_path, ec);  // a killed run's leftover
    const int fd = ::open(t.open_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) throw Error(t.final_path, std::string("cannot create the output file: ") + std::strerror(errno));
    ::close(fd);
    return t;
}

void commit_hdf5_file(const Hdf5Target& target) {
    if (!target.created) return;
    std::error_code ec;
    if (fs::exists(target.final_path, ec)) throw Error(target.final_path, "appeared while converting; not replacing it");
    fs::rename(target.open_path, target.final_path, ec);
    if (ec) throw Error(target.final_path, "cannot rename the finished file into place: " + ec.message());
}

void discard_hdf5_file(const Hdf5Target& target) noexcept {
    if (!target.created) return;
    std::error_code ec;
    fs::remove(target.open_path, ec);
}

Hdf5Writer::Hdf5Writer(MPI_Comm comm, const Hdf5Target& target, const Hdf5Contents& contents)
    : where_(target.final_path), target_(target), contents_(contents), staging_group_(staging_group_for(contents.group)) {
    const auto& tensors = *contents_.tensors;
    auto fapl = make_plist(H5P_FILE_ACCESS, where_);
    check(H5Pset_fapl_mpio(fapl.id(), comm, MPI_INFO_NULL), where_, "cannot use the MPI-IO driver");
    // Metadata is read and written collectively: every rank makes the same calls in the same order.
    check(H5Pset_all_coll_metadata_ops(fapl.id(), true), where_, "H5Pset_all_coll_metadata_ops");
    check(H5Pset_coll_metadata_write(fapl.id(), true), where_, "H5Pset_coll_metadata_write");
    if (target_.created)
        file_.reset(check(H5Fcreate(target_.open_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id()), where_,
                          "cannot create the HDF5 file"));
    else
        file_.reset(check(H5Fopen(target_.open_path.c_str(), H5F_ACC_RDWR, fapl.id()), where_,
                          "cannot open the HDF5 file for writing"));

    // IEEE half precision, little-endian (the type h5py reads as numpy float16).
    f16_.reset(check(H5Tcopy(H5T_IEEE_F32LE), where_, "H5Tcopy"));
    check(H5Tset_fields(f16_.id(), 15, 10, 5, 0, 10), where_, "H5Tset_fields");
    check(H5Tset_size(f16_.id(), 2), where_, "H5Tset_size");
    check(H5Tset_ebias(f16_.id(), 15), where_, "H5Tset_ebias");

    collective_ = make_plist(H5P_DATASET_XFER, where_);
    check(H5Pset_dxpl_mpio(collective_.id(), H5FD_MPIO_COLLECTIVE), where_, "H5Pset_dxpl_mpio");

    if (link_exists(file_.id(), staging_group_, where_))
        check(H5Ldelete(file_.id(), staging_group_.c_str(), H5P_DEFAULT), where_,
              "cannot remove the unfinished group '" + staging_group_ + "' of an earlier run");
    auto lcpl = make_plist(H5P_LINK_CREATE, where_);
    check(H5Pset_create_intermediate_group(lcpl.id(), 1), where_, "H5Pset_create_intermediate_group");
    h5::Group group(check(H5Gcreate2(file_.id(), staging_group_.c_str(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT), where_,
                          "cannot create group '" + staging_group_ + "'"));
    for (const auto& a : contents_.attributes) write_attribute(group.id(), a, where_);

    datasets_.reserve(tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        const std::string what = "cannot create dataset '" + t.name + "'";
        std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
        h5::Dataspace space(check(dims.empty() ? H5Screate(H5S_SCALAR)
                                               : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                                  where_, what));
        auto dcpl = make_plist(H5P_DATASET_CREATE, where_);
        // Every byte is written, so nothing is filled in first.
        check(H5Pset_fill_time(dcpl.id(), H5D_FILL_TIME_NEVER), where_, what);
        if (!dims.empty() && t.nbytes() > 0) {
            const std::uint64_t row = plan::tensor_row_bytes(t);
            if (row > kMaxChunkBytes) throw Error(where_, t.name + ": one row is larger than an HDF5 chunk can be (4 GiB)");
            std::vector<hsize_t> chunk = dims;
            chunk[0] = std::min<hsize_t>(contents_.chunk_rows.at(i), std::max<hsize_t>(kMaxChunkBytes / row, 1));
            check(H5Pset_chunk(dcpl.id(), static_cast<int>(chunk.size()), chunk.data()), where_, what);
            if (contents_.zstd_level) {
                const auto level = static_cast<unsigned int>(*contents_.zstd_level);
                check(H5Pset_filter(dcpl.id(), kZstdFilterId, H5Z_FLAG_MANDATORY, 1, &level), where_, what);
            }
        }
        h5::Dataset ds(check(H5Dcreate2(group.id(), t.name.c_str(), file_type(t.dtype), space.id(), H5P_DEFAULT,
                                        dcpl.id(), H5P_DEFAULT),
                             where_, what));
        write_attribute(ds.id(), {"dtype", std::string(torch_name(t.dtype))}, where_);
        datasets_.push_back(std::move(ds));
    }
}

hid_t Hdf5Writer::file_type(DType d) const {
    switch (d) {
        case DType::F32: return H5T_IEEE_F32LE;
        case DType::F64: return H5T_IEEE_F64LE;
        case DType::F16: return f16_.id();
        // numpy has no bfloat16: its bits are stored as uint16, marked by the dataset's dtype attribute.
        case DType::BF16: return H5T_STD_U16LE;
        case DType::BOOL:
        case DType::U8:
        case DType::F8_E5M2:
        case DType::F8_E4M3: return H5T_STD_U8LE;
        case DType::I8: return H5T_STD_I8LE;
        case DType::I16: return H5T_STD_I16LE;
        case DType::U16: return H5T_STD_U16LE;
        case DType::I32: return H5T_STD_I32LE;
        case DType::U32: return H5T_STD_U32LE;
        case DType::I64: return H5T_STD_I64LE;
        case DType::U64: return H5T_STD_U64LE;
        case DType::C64: break;
    }
    throw Error(where_, "dtype " + std::string(torch_name(d)) + " cannot be written to HDF5");
}

void Hdf5Writer::write(std::size_t tensor, std::span<const RowRun> runs) {
    const auto& t = contents_.tensors->at(tensor);
    const std::string what = "cannot write dataset '" + t.name + "'";
    const hid_t ds = datasets_.at(tensor).id();
    const hid_t type = file_type(t.dtype);
    h5::Dataspace file_space(check(H5Dget_space(ds), where_, what));
    const std::uint64_t row = plan::tensor_row_bytes(t);
    std::uint64_t total_rows = 0;
    for (const auto& r : runs) total_rows += r.rows;
    static const std::byte kNothing{};
    if (total_rows == 0) {
        check(H5Sselect_none(file_space.id()), where_, what);
        h5::Dataspace mem(check(H5Scopy(file_space.id()), where_, what));
        check(H5Dwrite(ds, type, mem.id(), file_space.id(), collective_.id(), &kNothing), where_, what);
        return;
    }
    if (t.shape.empty()) {  // a 0-d tensor: one "row"
        check(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, collective_.id(), runs.front().data), where_, what);
        return;
    }
    const auto sorted = merge_row_runs({runs.begin(), runs.end()}, row);
    std::vector<hsize_t> start(t.shape.size(), 0), count(t.shape.begin(), t.shape.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) {
        start[0] = sorted[i].first_row;
        count[0] = sorted[i].rows;
        check(H5Sselect_hyperslab(file_space.id(), i == 0 ? H5S_SELECT_SET : H5S_SELECT_OR, start.data(), nullptr,
                                  count.data(), nullptr),
              where_, what);
    }
    const std::byte* data = sorted.front().data;
    if (sorted.size() > 1) {  // rows taken in file order from separate buffers (the plan does not produce this)
        scratch_.resize(total_rows * row);
        std::uint64_t at = 0;
        for (const auto& r : sorted) {
            std::memcpy(scratch_.data() + at, r.data, r.rows * row);
            at += r.rows * row;
        }
        data = scratch_.data();
    }
    count[0] = total_rows;
    h5::Dataspace mem(check(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), where_, what));
    check(H5Dwrite(ds, type, mem.id(), file_space.id(), collective_.id(), data), where_, what);
}

std::uint64_t Hdf5Writer::commit(bool overwrite) {
    std::uint64_t stored = 0;
    for (const auto& ds : datasets_) stored += H5Dget_storage_size(ds.id());
    datasets_.clear();
    const auto& group = contents_.group;
    if (link_exists(file_.id(), group, where_)) {
        if (!overwrite) throw Error(where_, "group '" + group + "' appeared while converting; not replacing it");
        check(H5Ldelete(file_.id(), group.c_str(), H5P_DEFAULT), where_, "cannot delete the old group '" + group + "'");
    }
    auto lcpl = make_plist(H5P_LINK_CREATE, where_);
    check(H5Pset_create_intermediate_group(lcpl.id(), 1), where_, "H5Pset_create_intermediate_group");
    check(H5Lmove(file_.id(), staging_group_.c_str(), file_.id(), group.c_str(), lcpl.id(), H5P_DEFAULT), where_,
          "cannot rename the finished group onto '" + group + "'");
    committed_ = true;
    check(H5Fclose(file_.release()), where_, "cannot close the HDF5 file");
    return stored;
}

Hdf5Writer::~Hdf5Writer() {
    datasets_.clear();
    if (!committed_ && file_ && !target_.created) {
        // Every rank is here after the same agreed failure, so this collective call is made by all of them.
        H5Ldelete(file_.id(), staging_group_.c_str(), H5P_DEFAULT);
    }
}

void Hdf5Sink::write_round(std::size_t round, std::span<const WindowBytes> windows) {
    std::map<std::uint32_t, std::vector<RowRun>> mine;
    for (const auto& w : windows)
        for (const auto& s : writes_.segments.at(w.index))
            mine[s.tensor].push_back({s.first_row, s.rows, w.bytes.data() + s.window_offset});
    static const std::vector<RowRun> kNone;
    for (const auto t : writes_.round_tensors.at(round)) {
        const auto it = mine.find(t);
        writer_.write(t, it == mine.end() ? std::span<const RowRun>(kNone) : std::span<const RowRun>(it->second));
    }
}

}  // namespace m2h::io
