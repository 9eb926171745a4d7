/* SPDX-License-Identifier: MIT */
#include "fingerprint.h"

#include <openssl/evp.h>

#include "log.h"
#include "macro.h"

static void fclose_memstream(FILE **f)
{
        if (*f)
                fclose(*f);
}

int fingerprint_canonical(const Inventory *inv, char **ret)
{
        char *buf = NULL;
        size_t size = 0;
        _cleanup_(fclose_memstream) FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        fputs("gpuslice-inventory-v1\n", f);
        /* Inventory arrays are sorted by inventory_finalize(). */
        for (size_t i = 0; i < inv->n_numa_nodes; i++) {
                const NumaNode *n = &inv->numa_nodes[i];
                fprintf(f, "numa %d cpus=%s mem=%lld\n", n->id, n->cpus ? n->cpus : "?",
                        (long long)n->memory_bytes);
        }
        for (size_t i = 0; i < inv->n_devices; i++) {
                const Device *d = &inv->devices[i];
                if (d->is_vf && d->kind != DEVICE_KIND_GPU)
                        continue;
                fprintf(f, "pci %s id=%04x:%04x class=%04x kind=%s numa=%d iommu=%d vfs=%d up=",
                        d->address, (unsigned)d->vendor & 0xffff, (unsigned)d->device & 0xffff,
                        (unsigned)d->class_code & 0xffff, device_kind_to_string(d->kind),
                        d->numa_node, d->iommu_group, d->total_vfs);
                for (char **p = d->parents; p && *p; p++)
                        fprintf(f, "%s%s", p == d->parents ? "" : ",", *p);
                fputc('\n', f);
        }
        if (fclose(f) != 0) {
                f = NULL;
                free(buf);
                return -ENOMEM;
        }
        f = NULL;
        *ret = buf;
        return 0;
}

int fingerprint_compute(const Inventory *inv, char out[static FINGERPRINT_MAX])
{
        _cleanup_free_ char *canon = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        int r;

        r = fingerprint_canonical(inv, &canon);
        if (r < 0)
                return log_oom();
        if (EVP_Digest(canon, strlen(canon), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
                return log_error_errno(-EIO, "SHA-256 failed");
        char *p = stpcpy(out, "sha256:");
        for (unsigned i = 0; i < mdlen; i++)
                p += sprintf(p, "%02x", md[i]);
        return 0;
}
