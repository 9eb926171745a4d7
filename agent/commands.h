/* SPDX-License-Identifier: MIT */
#pragma once

/* Verbs of gpuslice-agent; main.c's table wires names to these. Each returns
 * the process exit code (0 ok, 2 bad input or usage, 1 failure). */

int cmd_discover(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_facts(int argc, char **argv);
