"""Where a task's tree comes from: git mirrors, remotes reached with the agent's credentials,
verified trees and each task's own copy, and the file locks agents on one host share them by."""
