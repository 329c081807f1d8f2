/** The CLI's version, as `shells --version` prints it. */
export const CLI_VERSION = "0.1.0";
