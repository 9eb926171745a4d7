/* SPDX-License-Identifier: MIT */
#include "async.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

#include "http.h"
#include "server.h"

struct AsyncJob {
        uv_work_t work;
        Server *server;
        Request *request; /* NULL once the request is gone */
        AsyncWorkFn work_fn;
        AsyncDoneFn done_fn;
        void *userdata;
        void (*free_fn)(void *);
};

static void run_work(uv_work_t *w)
{
        AsyncJob *j = w->data;
        j->work_fn(j->userdata);
}

static void after_work(uv_work_t *w, int status)
{
        AsyncJob *j = w->data;
        Request *r = j->request;
        if (r)
                r->job = NULL;
        j->done_fn(j->server, status == 0 ? r : NULL, j->userdata);
        if (j->free_fn)
                j->free_fn(j->userdata);
        server_job_finished(j->server);
        free(j);
}

int async_run(Request *r, AsyncWorkFn work, AsyncDoneFn done, void *userdata,
              void (*free_fn)(void *))
{
        if (r->job)
                return -EBUSY;
        AsyncJob *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (AsyncJob){.server = r->server,
                        .request = r,
                        .work_fn = work,
                        .done_fn = done,
                        .userdata = userdata,
                        .free_fn = free_fn};
        j->work.data = j;
        int rc = uv_queue_work(server_loop(r->server), &j->work, run_work, after_work);
        if (rc < 0) {
                free(j);
                return rc;
        }
        r->job = j;
        server_job_started(r->server);
        return 0;
}

void async_request_gone(Request *r)
{
        if (r->job) {
                r->job->request = NULL;
                r->job = NULL;
        }
}
