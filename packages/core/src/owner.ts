import { randomFillSync } from "node:crypto";

/*
 * Owner tokens are 128 random bits from the OS CSPRNG. Drawing 16 bytes per
 * acquire from crypto costs more than an uncontended in-process lock cycle, so
 * bytes are drawn in blocks and consumed 16 at a time.
 */
const BLOCK = 4096;
const pool = Buffer.alloc(BLOCK);
let offset = BLOCK;

/** A fresh 128-bit random owner token, as 32 hex characters. */
export function newOwnerToken(): string {
  if (offset + 16 > BLOCK) {
    randomFillSync(pool);
    offset = 0;
  }
  const token = pool.toString("hex", offset, offset + 16);
  offset += 16;
  return token;
}
