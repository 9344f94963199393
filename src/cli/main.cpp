// parallax: the one binary. Subcommands: data, train, sample, config (see --help).
#include <cstdio>
int main() { std::puts("parallax: not built yet"); return 0; }
