/* SPDX-License-Identifier: MIT */
#pragma once
/* Agent protocol envelope codec: implemented in proto.c (see docs/protocol.md). */
