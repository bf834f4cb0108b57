#include "pipeline/from_root.hpp"

#include <cstdint>
#include <vector>

namespace m2h::pipeline {

using nlohmann::json;

json from_root(const exchange::Comm& comm, const std::function<json()>& produce) {
    json result;
    exchange::collective(comm, [&] {
        if (comm.rank() == 0) result = produce();
    });
    std::vector<std::byte> bytes;
    if (comm.rank() == 0) {
        const auto cbor = json::to_cbor(result);
        bytes.assign(reinterpret_cast<const std::byte*>(cbor.data()),
                     reinterpret_cast<const std::byte*>(cbor.data()) + cbor.size());
    }
    comm.broadcast(bytes, 0);
    if (comm.rank() != 0) result = json::from_cbor(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                                   reinterpret_cast<const std::uint8_t*>(bytes.data()) + bytes.size());
    return result;
}

}  // namespace m2h::pipeline
