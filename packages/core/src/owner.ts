import { randomFillSync } from "node:crypto";

/*
 * Owner tokens are 128 random bits from the OS CSPRNG. Drawing 16 bytes per
 * acquire from crypto, or hex-encoding 16 bytes per acquire, costs more than
 * an uncontended in-process lock cycle: bytes are drawn and hex-encoded in
 * blocks, and each token is a 32-character slice of the block's hex (V8
 * makes it a view of the block string, not a copy).
 */
const BLOCK = 4096;
const pool = Buffer.alloc(BLOCK);
const TOKEN_CHARS = 32;
let hex = "";
let offset = 0;

/**
 * A fresh 128-bit random owner token, as 32 hex characters.
 *
 * @group Keys
 */
export function newOwnerToken(): string {
  if (offset === hex.length) {
    randomFillSync(pool);
    hex = pool.toString("hex");
    offset = 0;
  }
  const token = hex.slice(offset, offset + TOKEN_CHARS);
  offset += TOKEN_CHARS;
  return token;
}
