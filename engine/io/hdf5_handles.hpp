#pragma once
// RAII for HDF5 identifiers: each handle owns one hid_t and closes it with the function of its kind, and
// check() turns a failed HDF5 call into an m2h::Error carrying the library's own reason (the innermost entry
// of its error stack), so no HDF5 call's failure goes unnoticed or prints HDF5's multi-line trace.
#include <string>
#include <string_view>
#include <utility>

#include <hdf5.h>

#include "common/error.hpp"

namespace m2h::io::h5 {

template <herr_t (*Close)(hid_t)>
class Handle {
public:
    Handle() = default;
    explicit Handle(hid_t id) noexcept : id_(id) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
    Handle& operator=(Handle&& other) noexcept {
        if (this != &other) reset(std::exchange(other.id_, H5I_INVALID_HID));
        return *this;
    }
    ~Handle() { reset(); }

    hid_t id() const noexcept { return id_; }
    explicit operator bool() const noexcept { return id_ >= 0; }
    // Gives up ownership without closing (to close it with a checked call).
    hid_t release() noexcept { return std::exchange(id_, H5I_INVALID_HID); }
    // Closes the current identifier (errors while closing cannot be reported from here and are ignored).
    void reset(hid_t id = H5I_INVALID_HID) noexcept {
        if (id_ >= 0) Close(id_);
        id_ = id;
    }

private:
    hid_t id_ = H5I_INVALID_HID;
};

using File = Handle<H5Fclose>;
using Group = Handle<H5Gclose>;
using Dataset = Handle<H5Dclose>;
using Dataspace = Handle<H5Sclose>;
using PropList = Handle<H5Pclose>;
using Type = Handle<H5Tclose>;  // only for types the program made (H5Tcopy, H5Tcreate), never predefined ones
using Attribute = Handle<H5Aclose>;

// The innermost message of the current thread's HDF5 error stack ("" when empty).
std::string last_error();

// Stops HDF5 from printing its error stack on failures; the engine reports them through check().
void silence_errors();

// Returns `result` when it is not negative; otherwise throws Error(where, what + ": " + last_error()).
template <typename T>
T check(T result, const std::string& where, std::string_view what) {
    if (result < 0) {
        const auto why = last_error();
        throw Error(where, std::string(what) + (why.empty() ? std::string() : ": " + why));
    }
    return result;
}

}  // namespace m2h::io::h5
