#pragma once
// The HDF5 output (docs/hdf5.md): one group per conversion in one .h5 file, one chunked dataset per Hugging
// Face tensor, written by all ranks at once through parallel HDF5 (MPI-IO driver, collective transfers),
// optionally compressed with the zstd filter (io/zstd_filter.hpp).
//
// The group is built under a hidden staging name (".<group>.m2h-partial") and renamed onto its name at the end;
// a new file is built as ".<file>.m2h-partial" beside --output and renamed at the end. So a failed run leaves
// neither a new file nor a half-written group behind.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include <mpi.h>

#include "io/hdf5_handles.hpp"
#include "io/output_sink.hpp"
#include "plan/hdf5_layout.hpp"
#include "plan/safetensors_layout.hpp"

namespace m2h::io {

// Registers the zstd filter with the HDF5 library the engine runs on and stops HDF5 from printing its error
// stacks (failures become m2h::Error). Idempotent; call before any other HDF5 use.
void init_hdf5();

// Throws Error("--group", ...) unless `group` is a usable group path ("iter_0001000", "run1/iter_0001000"):
// non-empty parts separated by '/', none "." or "..", the last not starting with '.' (kept for staging).
void check_hdf5_group_name(const std::string& group);

struct Hdf5Target {
    std::string final_path;  // --output, absolute
    std::string open_path;   // what the ranks open: final_path when the file exists, else its staging sibling
    bool created = false;    // a new file, renamed onto final_path by commit_hdf5_file
};

// Rank 0 only, before any collective HDF5 call. Checks --output: a folder, a file that is not HDF5, a file or
// folder that cannot be written, or an existing group without `overwrite` is an Error naming the path. For
// a new file, creates parent folders and the empty staging file (removing a killed run's leftover).
Hdf5Target prepare_hdf5_output(const std::string& path, const std::string& group, bool overwrite);

// Rank 0 only, after every rank closed the file: renames a new file into place. No-op for an existing file.
void commit_hdf5_file(const Hdf5Target& target);
// Rank 0 only, after a failure: removes a new file's staging file. No-op for an existing file.
void discard_hdf5_file(const Hdf5Target& target) noexcept;

using Hdf5AttributeValue = std::variant<std::string, std::int64_t>;
struct Hdf5Attribute {
    std::string name;
    Hdf5AttributeValue value;
};

struct Hdf5Contents {
    std::string group;                        // receives the tensors
    const std::vector<tensors::OutputTensor>* tensors = nullptr;  // one dataset each, created in this order
    std::vector<std::uint64_t> chunk_rows;    // per tensor (plan::hdf5_chunk_rows)
    std::optional<int> zstd_level;            // nullopt: no compression
    std::vector<Hdf5Attribute> attributes;    // of the group
};

// A contiguous run of whole rows of one tensor, in the tensor's byte layout.
struct RowRun {
    std::uint64_t first_row = 0;
    std::uint64_t rows = 0;
    const std::byte* data = nullptr;
};

// Sorts runs by row and joins those that continue each other in rows and in memory (consecutive windows of
// one rank hold a tensor's rows back to back), so a rank's part of a dataset is usually one run.
std::vector<RowRun> merge_row_runs(std::vector<RowRun> runs, std::uint64_t row_bytes);

class Hdf5Writer {
public:
    // Collective: every rank, identical arguments. Opens target.open_path through the MPI-IO driver, removes a
    // leftover staging group, creates the staging group with its attributes and every dataset.
    Hdf5Writer(MPI_Comm comm, const Hdf5Target& target, const Hdf5Contents& contents);
    Hdf5Writer(const Hdf5Writer&) = delete;
    Hdf5Writer& operator=(const Hdf5Writer&) = delete;
    // Uncommitted (a failure every rank agreed on): removes the staging group from an existing file, closes.
    ~Hdf5Writer();

    // Collective: every rank calls it for the same tensors in the same order, with its own runs (none: an
    // empty selection). Runs must not overlap.
    void write(std::size_t tensor, std::span<const RowRun> runs);

    // Collective: renames the staging group onto the group (deleting an old group of that name first when
    // `overwrite`), closes the file, and returns the bytes the datasets occupy in it.
    std::uint64_t commit(bool overwrite);

private:
    hid_t file_type(DType d) const;

    std::string where_;   // the file, for errors
    Hdf5Target target_;
    Hdf5Contents contents_;
    std::string staging_group_;
    h5::File file_;
    h5::Type f16_;
    h5::PropList collective_;
    std::vector<h5::Dataset> datasets_;
    std::vector<std::byte> scratch_;
    bool committed_ = false;
};

// The executor's sink for HDF5: per round, every rank writes its rows of each tensor the round touches, in
// ascending tensor order, so all ranks make the same collective calls.
class Hdf5Sink final : public OutputSink {
public:
    Hdf5Sink(Hdf5Writer& writer, plan::Hdf5Writes writes) : writer_(writer), writes_(std::move(writes)) {}
    void write_round(std::size_t round, std::span<const WindowBytes> windows) override;

private:
    Hdf5Writer& writer_;
    plan::Hdf5Writes writes_;
};

}  // namespace m2h::io
