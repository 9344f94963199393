#include <gtest/gtest.h>
TEST(CudaPlaceholder, Builds) { EXPECT_EQ(2 * 2, 4); }
