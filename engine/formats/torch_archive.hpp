#pragma once
// A torch.save archive: a zip whose <prefix>/data.pkl refers to storages stored as <prefix>/data/<key>.
// Loading the pickle gives a value tree whose tensors are TensorRefs; tensor_location() turns one into the
// byte range of its elements, after checking it lies inside its storage record.
#include <cstdint>
#include <string>

#include "io/zip_archive.hpp"
#include "pickle/value.hpp"

namespace m2h::formats {

struct TensorLocation {
    std::uint64_t offset;  // of element 0, relative to the archive's byte source
    std::uint64_t nbytes;  // numel * element size; the tensor is row-major contiguous from `offset`
};

class TorchArchive {
public:
    explicit TorchArchive(const io::ByteSource& source);

    // Runs data.pkl. Storages become StorageRefs (checked against their records' sizes).
    pickle::ValuePtr load() const;
    // Where the tensor's elements are. Requires a row-major contiguous tensor (any storage offset) and a
    // little-endian archive; `key` names the tensor in errors.
    TensorLocation tensor_location(const pickle::TensorRef& tensor, const std::string& key) const;
    const io::ZipArchive& zip() const noexcept { return zip_; }
    std::string name() const { return zip_.source().name(); }

private:
    io::ZipArchive zip_;
    bool big_endian_ = false;
};

}  // namespace m2h::formats
