#pragma once
// Wire header of a backbone push (learner -> syncer, tag TAG_PUSH, wire/mpi_tags.hpp): the
// header, then encoded_bytes(dtype, n) bytes of the shard's outer gradient (sync/codec.hpp).
// Little-endian, the in-memory layout (read with memcpy); 40 bytes, no padding.
#include <cstdint>

namespace px {

struct PushHeader {
  int64_t step, tokens, n;  // learner's step; tokens trained by its island since its last push; values
  int32_t island, fragment, shard, dtype;  // unit u = fragment * R + shard; dtype: WireDtype
};
static_assert(sizeof(PushHeader) == 40);

}  // namespace px
