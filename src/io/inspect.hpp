#pragma once
// `parallax inspect FILE.h5` (DESIGN §8): a readable summary of any Parallax HDF5 file —
// checkpoint, metrics, token shard or tokenizer: root attributes, then every dataset with its
// type and shape, and for small 1-D numeric datasets their first and last values.
#include <string>

namespace px {

// Returns the summary text; a missing or non-HDF5 file is a UserError naming it.
std::string inspect_h5(const std::string& path);

}  // namespace px
