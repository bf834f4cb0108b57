#include "io/hdf5_handles.hpp"

namespace m2h::io::h5 {

std::string last_error() {
    std::string message;
    // Upward: the entry where the error was detected comes first, the API call last.
    H5Ewalk2(
        H5E_DEFAULT, H5E_WALK_UPWARD,
        [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
            auto* out = static_cast<std::string*>(data);
            if (n == 0 && e->desc) *out = e->desc;
            return 0;
        },
        &message);
    return message;
}

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

}  // namespace m2h::io::h5
