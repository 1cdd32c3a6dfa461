/**
 * Bad input from the command line: reported as one line on stderr, exit code 2.
 *
 * @group Usage errors
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
