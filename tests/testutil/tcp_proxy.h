#pragma once
// (placeholder; filled in by the dead-connection work)
