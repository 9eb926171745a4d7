/* SPDX-License-Identifier: MIT */
#pragma once

/* Work that must not run on the event loop (password hashing) goes to libuv's
 * thread pool. The work function touches no shared state (no database); the
 * done function runs back on the loop with the request, or with NULL when the
 * client went away meanwhile. */

typedef struct Request Request;
typedef struct Server Server;

typedef void (*AsyncWorkFn)(void *userdata);
typedef void (*AsyncDoneFn)(Server *s, Request *r, void *userdata);

/* free_fn (may be NULL) releases userdata after done ran. */
int async_run(Request *r, AsyncWorkFn work, AsyncDoneFn done, void *userdata,
              void (*free_fn)(void *));
/* Called when a request is disposed: detaches its pending job. */
void async_request_gone(Request *r);
