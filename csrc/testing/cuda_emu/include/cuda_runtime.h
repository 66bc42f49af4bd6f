// Fake CUDA header for the emulator build (tests only): everything is in cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
