#pragma once
#include "wire/sketch_wire.hpp"  // forwarding header: the sketch wire format lives in src/wire/
