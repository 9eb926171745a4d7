/* SPDX-License-Identifier: MIT */
#pragma once

/* Erasing a slot's NVMe drive between tenants, with admin commands sent
 * through NVME_IOCTL_ADMIN_CMD on root/dev/<ctrl> (the controller bound to the
 * host's nvme driver). The method comes from the controller's own Identify
 * data, strongest first, and is returned so the teardown can record it:
 *
 *   SANICAP block erase   -> Sanitize, block erase      (whole subsystem, all namespaces)
 *   SANICAP crypto erase  -> Sanitize, crypto erase
 *   OACS Format NVM       -> Format NVM, SES=1 user data erase, each active namespace
 *   FNA crypto erase      -> Format NVM, SES=2 crypto erase (when SES=1 is refused)
 *   otherwise             -> overwrite every active namespace with zeros
 *
 * A method the controller refuses as unsupported (Invalid Opcode/Field/Format:
 * QEMU 7.2 has no Sanitize) falls through to the next; any other failure
 * stops the wipe (the slot is quarantined, never silently half-wiped).
 * Format and overwrite reach only attached namespaces: when the controller
 * reports an allocated namespace that is not attached (a tenant with the whole
 * controller can create and detach one), only Sanitize can vouch for it, and
 * without Sanitize the wipe fails. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
        NVME_WIPE_NONE = 0,
        NVME_WIPE_SANITIZE_BLOCK,
        NVME_WIPE_SANITIZE_CRYPTO,
        NVME_WIPE_FORMAT_USER_DATA,
        NVME_WIPE_FORMAT_CRYPTO,
        NVME_WIPE_OVERWRITE,
        _NVME_WIPE_MAX,
} NvmeWipeMethod;

#define NVME_WIPE_ALLOW(m)  (1u << (m))
#define NVME_WIPE_ALLOW_ALL 0xffffffffu

typedef struct {
        bool sanitize_crypto; /* SANICAP bit 0 */
        bool sanitize_block;  /* SANICAP bit 1 */
        bool format;          /* OACS bit 1 */
        bool ns_management;   /* OACS bit 3 */
        bool format_all_ns;   /* FNA bit 0: a format covers every namespace */
        bool format_crypto;   /* FNA bit 2 */
        uint16_t cntlid;
} NvmeCaps;

/* From a 4096-byte Identify Controller data structure. */
void nvme_caps_parse(const uint8_t id[4096], NvmeCaps *ret);

/* The methods to try, in order, limited to allowed (NVME_WIPE_ALLOW bits). */
size_t nvme_wipe_plan(const NvmeCaps *caps, unsigned allowed, NvmeWipeMethod out[_NVME_WIPE_MAX]);

/* "sanitize_block_erase", "format_user_data_erase", "overwrite", ... */
const char *nvme_wipe_method_name(NvmeWipeMethod m);

typedef struct {
        NvmeWipeMethod method; /* what erased the drive (NONE when nothing did) */
        unsigned namespaces;   /* active namespaces it covered */
        char detail[256];      /* methods refused on the way, or why it failed */
} NvmeWipeResult;

/* Wipes controller ctrl ("nvme0") under root. 0 with ret->method set, or
 * -ENOTRECOVERABLE (a detached namespace and no Sanitize), -ENOTSUP (no
 * allowed method worked), -EIO (the drive failed a command), -ETIMEDOUT,
 * -ENOENT (no such controller). ret->detail says which. */
int nvme_wipe(const char *root, const char *ctrl, unsigned allowed, unsigned timeout_ms,
              NvmeWipeResult *ret);

/* The block device name of namespace nsid of ctrl ("nvme0n1"), multipath or not. */
int nvme_namespace_block(const char *root, const char *ctrl, uint32_t nsid, char **ret);

/* The controller's char device name ("nvme0") for a PCI function bound to nvme. */
int nvme_controller_of(const char *root, const char *pci_addr, char **ret);

/* Raw admin command for callers that need one (tests, namespace attachment):
 * returns 0, the NVMe status (> 0), or -errno. */
int nvme_admin(int fd, uint8_t opcode, uint32_t nsid, uint32_t cdw10, uint32_t cdw11, void *data,
               uint32_t len, unsigned timeout_ms, uint32_t *result);
